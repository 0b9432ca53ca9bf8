"Training across processes (issue 18, item 3): the metrics summed over processes, and lesson 2 run by `torchrun` as 2 CPU processes (gloo)."
import json, math, os, socket, subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import BIN
from lessons_lib.metrics import seg_metrics, seg_confusion


def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class _Shared:
    "A stand-in for fastai's `DistributedDL` (what `ConfusionMetric` looks at)."
    world_size = 2

class _Learn:
    def __init__(self, pred, y): self.pred, self.y, self.dl = pred, y, _Shared()


def _batches(rank):
    "Rank `rank`'s share of a validation set: different predictions and targets in each process."
    g = torch.Generator().manual_seed(rank)
    return [(torch.randn(2, 4, 6, 6, generator=g), torch.randint(0, 4, (2, 6, 6), generator=g)) for _ in range(3 + rank)]


def _worker(rank, port, out):
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        mets = seg_metrics(4, void_code=3)
        for m in mets:
            m.reset()
            for p, y in _batches(rank): m.accumulate(_Learn(p, y))
        vals = [m.value for m in mets] + [m.value for m in mets]       # asked twice: reduced once
        torch.save(vals, Path(out)/f'rank{rank}.pt')
    finally: dist.destroy_process_group()


def test_confusion_metrics_are_summed_over_processes(tmp_path):
    "Each of 2 gloo processes sees its own share; both report the metric of the whole set (the sum of their matrices)."
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path/f'rank{r}.pt') for r in (0, 1)]
    cm = sum(seg_confusion(p.argmax(1), y, 4, 3) for r in (0, 1) for p, y in _batches(r))
    whole = [m.fn(cm) for m in seg_metrics(4, void_code=3)]
    alone = [m.fn(sum(seg_confusion(p.argmax(1), y, 4, 3) for p, y in _batches(0))) for m in seg_metrics(4, void_code=3)]
    for vals in got:
        assert vals[:2] == pytest.approx(whole, abs=1e-9) and vals[2:] == vals[:2]
    assert alone != pytest.approx(whole, abs=1e-3)          # (rank 0's share alone would have given another number)


def test_unet_tiny_on_two_cpu_processes(tiny_run, tmp_path):
    "`torchrun --nproc-per-node 2 -m lessons_lib.cli unet --size tiny`: completes, each process trains on half the batches, rank 0 writes."
    one, _ = tiny_run('unet')
    m1 = json.loads((one/'unet'/'metrics.json').read_text())
    out = tmp_path/'two'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([str(BIN/'torchrun'), '--nproc-per-node', '2', '--master-addr', '127.0.0.1', '--master-port', str(_free_port()),
                        '-m', 'lessons_lib.cli', 'unet', '--size', 'tiny', '--out', str(out)],
                       capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert 'lesson7: training on 2 processes' in r.stdout
    assert r.stdout.count('lesson7: unet done') == 1                     # rank 1 trains in silence
    m2 = json.loads((out/'unet'/'metrics.json').read_text())
    assert m1['hardware']['processes'] == 1 and m2['hardware']['processes'] == 2
    (n1,) = m1['train_batches_per_process']
    assert m2['train_batches_per_process'] == [math.ceil(n1 / 2)] * 2, (n1, m2['train_batches_per_process'])
    assert (m2['n_train'], m2['n_valid']) == (m1['n_train'], m1['n_valid'])   # the whole validation set, in both runs
    assert not list((out/'unet').rglob('.*.tmp'))                       # every file written once, whole
    ck = torch.load(out/'unet'/'handwritten.pth', weights_only=True)
    assert ck['meta']['size'] == 'tiny' and ck['stage'] == 2              # rank 0's checkpoint, the schedule marked done
    # tiny trains 1 + 1 epochs of a dozen batches (and 2 processes take half the steps with twice the batch): its numbers
    # are noise; measured 0.05-0.18 (handwritten) and 0.82-0.92 (DynamicUnet) non-void accuracy, 0.01-0.08 mean IoU
    for k, tol in (('acc_nonvoid', 0.3), ('dynamic_unet_acc', 0.3), ('miou', 0.1), ('dynamic_unet_miou', 0.1)):
        assert abs(m2[k] - m1[k]) <= tol, (k, m1[k], m2[k])
