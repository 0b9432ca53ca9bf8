"`lesson7` when things around the notebook go wrong: a dead kernel, a signal, a full disk, no notebooks; and progress."
import json, os, re, resource, shutil, signal, subprocess, sys, time
from pathlib import Path
import nbformat, psutil, pytest
from PIL import Image
from conftest import BIN, ctrl_c_default, lesson7

METRICS = ("from lessons_lib.core import get_config, lesson_dir, save_json\n"
           "save_json({'size': get_config().size}, lesson_dir(get_config(), 'resnet')/'metrics.json')")

def fake_lessons(d: Path, *cells) -> Path:
    "Folder `d` holding a lesson 1 notebook of code `cells`: a lesson that costs seconds, for LESSONS_NBS."
    nb = nbformat.v4.new_notebook(); nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    d.mkdir(parents=True, exist_ok=True); nbformat.write(nb, d/'01_resnet.ipynb')
    return d

def start(args, log: Path, env=None) -> subprocess.Popen:
    "`lesson7 ARGS` started in a session of its own, its stdout into `log`, its stderr piped."
    with open(log, 'wb') as f:
        return subprocess.Popen([str(BIN/'lesson7'), *map(str, args)], stdout=f, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, **(env or {})}, preexec_fn=ctrl_c_default)

def wait_for(text, log: Path, proc, timeout=600) -> bool:
    "Whether `text` appeared in `log` before `proc` ended or `timeout` seconds passed."
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if text in log.read_text(errors='replace'): return True
        time.sleep(0.1)
    return False

def kill_tree(proc):
    "SIGKILL whatever is left of `proc` and the processes under it (a test that failed leaves no kernel behind)."
    try: tree = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess: tree = []
    for p in tree:
        try: p.kill()
        except psutil.NoSuchProcess: pass
    proc.wait()

def error_lines(err: str) -> list:
    "The non-blank lines of a run's stderr."
    return [l for l in err.splitlines() if l.strip()]


# ---- 1. a kernel killed mid-lesson ends the run at once: one line, the notebook kept ----
def test_killed_kernel_ends_the_run_with_one_line_and_the_notebook(tmp_path):
    out, log = tmp_path/'out', tmp_path/'run.log'
    proc = start(['resnet', '--size', 'tiny', '--out', out], log)
    try:
        assert wait_for('01_resnet: cell ', log, proc), log.read_text()[-2000:]      # a training cell has started
        kernel, = [c for c in psutil.Process(proc.pid).children() if 'ipykernel' in ' '.join(c.cmdline())]
        kernel.kill()
        _, err = proc.communicate(timeout=90)                                         # before: it slept forever
    finally: kill_tree(proc)
    assert proc.returncode == 1 and 'Traceback' not in err, err[-3000:]
    line, = error_lines(err)
    assert line.startswith('lesson7: error: the kernel running 01_resnet.ipynb was killed by SIGKILL (likely out of '
                           'memory'), line
    nb = out/'resnet'/'01_resnet.ipynb'
    assert f'; the notebook up to there is in {nb}; ' in line and 'rerun' in line, line
    cells = nbformat.read(nb, as_version=4).cells
    said = [o.get('text', '') for c in cells if c.cell_type == 'code' for o in c.outputs]
    assert any('was killed by SIGKILL' in t for t in said)                           # where it stopped


# ---- Ctrl-C and SIGTERM still stop a busy cell (nbclient's handlers, now on the async kernel manager) ----
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_busy_cell(sig, tmp_path):
    nbs = fake_lessons(tmp_path/'nbs', "import time\nprint('busy', flush=True)\ntime.sleep(600)")
    log = tmp_path/'run.log'
    proc = start(['resnet', '--size', 'tiny', '--out', tmp_path/'out'], log, env={'LESSONS_NBS': str(nbs)})
    try:
        assert wait_for('| busy', log, proc, timeout=300), log.read_text()[-2000:]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally: kill_tree(proc)
    assert proc.returncode == 130, err[-2000:]
    assert error_lines(err) == ['lesson7: interrupted; no checkpoint had been written yet; rerun to start again'], err
    assert (tmp_path/'out'/'resnet'/'01_resnet.ipynb').is_file()


# ---- 2. a full disk (files limited to 1 MB: RLIMIT_FSIZE) is one line naming the path, and the cell that failed ----
WRITE_2MB = "import os\nopen(os.path.join(os.environ['LESSONS_OUT'], 'big.bin'), 'wb').write(b'x' * 2_000_000)"
SHOW_2MB = "from IPython.display import display\ndisplay({'text/plain': 'x' * 2_000_000}, raw=True)"

@pytest.mark.parametrize('notebook_too', [True, False])
def test_full_disk_is_one_line(notebook_too, tmp_path):
    nbs = fake_lessons(tmp_path/'nbs', *([SHOW_2MB] if notebook_too else []), WRITE_2MB)
    out = tmp_path/'out'
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
    r = subprocess.run([str(BIN/'lesson7'), 'resnet', '--size', 'tiny', '--out', str(out)], capture_output=True,
                       text=True, timeout=300, env={**os.environ, 'LESSONS_NBS': str(nbs)}, preexec_fn=limit)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    line, = error_lines(r.stderr)
    failed = f"01_resnet.ipynb, cell {1 if notebook_too else 0}: OSError: [Errno 27] File too large"
    nb = out/'resnet'/'01_resnet.ipynb'
    if notebook_too:
        assert line == (f"lesson7: error: the executed notebook could not be saved to {nb}: file too large; "
                        f"free space there or choose another --out (before that: {failed})"), line
        assert not nb.exists() and not list(nb.parent.glob('.*.tmp'))
    else:
        assert line == (f"lesson7: error: {failed}; the disk refused a write: free space or choose another --out; "
                        f"the executed notebook is in {out/'resnet'}"), line
        assert nb.is_file()


# ---- issue 31: no notebooks is one line, even for --help; an installed copy runs its own, into ./results ----
def test_missing_notebooks_folder_is_one_line_even_for_help(tmp_path):
    r = lesson7('--help', env={'LESSONS_NBS': '/nonexistent'})
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert r.stdout.startswith('usage: lesson7') and 'LESSONS_NBS=/nonexistent is not a folder' in r.stdout, r.stdout
    r = lesson7('resnet', '--size', 'tiny', '--out', tmp_path, env={'LESSONS_NBS': '/nonexistent'})
    assert r.returncode == 1 and error_lines(r.stderr) == [
        'lesson7: error: LESSONS_NBS=/nonexistent is not a folder: set it to the folder of the lesson notebooks, '
        'or unset it'], r.stderr[-2000:]

def test_installed_copy_runs_its_own_notebooks_into_the_current_folder(tmp_path):
    import lessons_lib
    site = tmp_path/'site'
    shutil.copytree(Path(lessons_lib.__file__).parent, site/'lessons_lib',
                    ignore=shutil.ignore_patterns('__pycache__'))
    fake_lessons(site/'lessons_lib'/'_nbs', METRICS)           # as the wheel carries them: no nbs/ beside the package
    work = tmp_path/'work'; work.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith('LESSONS_')}, 'PYTHONPATH': str(site)}
    r = subprocess.run([sys.executable, '-m', 'lessons_lib.cli', 'resnet', '--size', 'tiny'], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert json.loads((work/'results'/'resnet'/'metrics.json').read_text())['size'] == 'tiny'   # not _nbs/results
    assert (work/'results'/'resnet'/'01_resnet.ipynb').is_file()


# ---- 3. Ctrl-C while upscaling says which images were written, not a word of checkpoints ----
def test_ctrl_c_while_upscaling_says_what_was_written(tmp_path):
    from lessons_lib.core import Config
    from lessons_lib.superres import save_generator, superres_generator, superres_settings
    cfg = Config(size='tiny', pretrained='off'); st = superres_settings(cfg)
    out = tmp_path/'out'                                 # an untrained generator upscales as slowly as a trained one
    save_generator(superres_generator(cfg, st.encoder, st.widths), out/'superres'/'generator_feature.pth')
    small, big = tmp_path/'small.png', tmp_path/'big.png'
    Image.new('RGB', (64, 48), (200, 40, 40)).save(small)
    Image.new('RGB', (2400, 1600), (20, 120, 40)).save(big)   # 88 tiles: seconds to upscale
    log = tmp_path/'run.log'
    proc = start(['superres', '--size', 'tiny', '--out', out, '--image', small, '--image', big], log)
    try:
        assert wait_for('big.png: tile', log, proc), log.read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally: kill_tree(proc)
    assert proc.returncode == 130, err[-2000:]
    done, = (out/'superres'/'upscaled').glob('small-*_x2.png')
    assert error_lines(err) == [f'lesson7: interrupted; 1 of 2 images upscaled, into {done}; '
                                'nothing else was changed'], err
    assert not list((out/'superres'/'upscaled').glob('big-*'))


# ---- issue 32: at full, a long epoch says where it is, after PROGRESS_EVERY seconds without a line ----
BAR = ("import time\nfrom fastprogress.fastprogress import master_bar, progress_bar\n"   # as fastai's fit drives them
       "mb = master_bar(range(2))\nfor epoch in mb:\n    pb = progress_bar(range(20), parent=mb)\n    for i in pb:\n"
       "        time.sleep({s}); pb.comment = f'{{1 / (i + 1):.4f}}'")
PROGRESS = re.compile(r'  \| epoch [12]/2, batch \d+/20, loss \d\.\d{4}, (\d+:)?\d\d:\d\d left')

def test_progress_lines_only_when_asked(tmp_path):
    from lessons_lib.cli import execute_notebook
    nb = fake_lessons(tmp_path, BAR.format(s=0.05))/'01_resnet.ipynb'
    said = {}
    for every in (0, None):
        said[every] = []; execute_notebook(nb, None, log=said[every].append, progress_every=every)
    assert len([l for l in said[0] if PROGRESS.fullmatch(l)]) >= 10, said[0]
    assert said[None] == [], said[None]

def test_full_size_shows_progress_in_a_long_epoch(tmp_path):
    nbs = fake_lessons(tmp_path/'nbs', BAR.format(s=1), METRICS)                     # 40 s of bars, idle
    r = lesson7('resnet', '--size', 'full', '--out', tmp_path/'out', env={'LESSONS_NBS': str(nbs)})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stdout.splitlines() if 'batch' in l]
    assert lines and all(PROGRESS.fullmatch(l) for l in lines), r.stdout
