"""The benchmarks under bench/ run and say what they measure; the GPU check answers in one line without CUDA and runs
every part on the CPU with --smoke (its CUDA parts skipped). No timing is asserted: these machines are noisy."""
import re, subprocess, sys
from pathlib import Path
import pytest, torch

REPO = Path(__file__).resolve().parent.parent

def _run(*args, timeout=900):
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)

@pytest.mark.skipif(torch.cuda.is_available(), reason='a CUDA GPU is here: the check would run for real')
def test_gpu_check_without_cuda_is_one_line():
    r = _run(REPO/'bench'/'gpu_check.sh', timeout=120)
    assert r.returncode == 2 and r.stdout == '', (r.stdout[-1000:], r.stderr[-2000:])
    assert len(r.stderr.strip().splitlines()) == 1 and 'no CUDA GPU' in r.stderr and '--smoke' in r.stderr, r.stderr

def test_gpu_check_smoke_runs_every_lesson_on_the_cpu(tmp_path):
    r = _run(REPO/'bench'/'gpu_check.sh', '--smoke', '--work', tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert 'CUDA parts skipped' in r.stdout and 'FAILED' not in r.stdout, r.stdout[-3000:]
    for n in (2, 3, 4, 5):                  # ours and fastai's, images per second, and their ratio
        line = next((l for l in r.stdout.splitlines() if l.startswith(f'lesson {n} (')), '')
        speeds = [float(x) for x in re.findall(r'([\d.]+) images/s', line)]
        assert len(speeds) == 2 and all(v > 0 for v in speeds) and 'speed ours/fastai' in line, (n, line)
    acc = re.search(r'lesson 1 \(.*accuracy ([\d.]+)', r.stdout)
    assert acc and 0 <= float(acc.group(1)) <= 1, r.stdout[-2000:]
    assert (tmp_path/'fastai'/'data'/'camvid'/'codes.txt').is_file()              # on the fabricated course layout

def test_cpu_peak_prints_the_fraction_of_peak_and_its_causes():
    r = _run(sys.executable, REPO/'bench'/'cpu_peak.py', '--steps', '2', '--lessons', 'unet')
    assert r.returncode == 0, r.stderr[-3000:]
    peak = float(re.search(r'float32 peak .*: ([\d.]+) GFLOP/s', r.stdout).group(1))
    frac = float(re.search(r'lesson 2 .* = ([\d.]+) of peak', r.stdout).group(1))
    assert peak > 0 and 0 < frac < 2, r.stdout
    for cause in ('small convolutions:', 'layout: channels_last', 'threads: 1 thread'):
        assert cause in r.stdout, (cause, r.stdout)
