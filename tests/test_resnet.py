"Tests of lessons_lib.resnet: conv arithmetic, residual blocks, the ResNet builder, the loss landscape, `lesson7 resnet`."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from conftest import lesson7
from lessons_lib.resnet import (conv_out, conv_transpose_out, conv_stack_sizes, ResNet, n_conv_layers, course_resnet,
                                pixel_shift, augmented_digit, trim_summary, mark_lr_find)
from lessons_lib.layers import conv_layer, ResBlock, DenseBlock
from lessons_lib.mnist import RandomShift
from lessons_lib.landscape import loss_landscape, filter_normalized_direction


def test_conv_arithmetic_matches_torch():
    rng = np.random.default_rng(1)
    for _ in range(200):
        k, s = int(rng.integers(1, 8)), int(rng.integers(1, 5))
        p, i = int(rng.integers(0, k // 2 + 1)), int(rng.integers(k, 40))
        x = torch.zeros(1, 1, i, i + 3)
        out = nn.Conv2d(1, 1, k, s, p)(x).shape[-2:]
        assert tuple(out) == (conv_out(i, k, s, p), conv_out(i + 3, k, s, p)), (i, k, s, p)
        a = int(rng.integers(0, s))
        out = nn.ConvTranspose2d(1, 1, k, s, p, output_padding=a)(x).shape[-2:]
        assert tuple(out) == (conv_transpose_out(i, k, s, p, a), conv_transpose_out(i + 3, k, s, p, a)), (i, k, s, p, a)
    assert conv_stack_sizes(28, 5) == [28, 14, 7, 4, 2, 1]


def test_fresh_residual_block_is_identity():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 9, 9)
    for blk in (ResBlock(16), ResBlock(16).eval()):
        assert torch.equal(blk(x), x)
    blk = ResBlock(16)
    with torch.no_grad(): blk.convs[1][1].weight.fill_(1.)      # once trained away from zero, it is not the identity
    assert not torch.allclose(blk(x), x)


def test_block_shapes_and_paths():
    x = torch.randn(2, 8, 7, 7)
    blk = ResBlock(8, 16, stride=2)
    assert blk(x).shape == (2, 16, 4, 4)
    assert isinstance(blk.idpath[0], nn.AvgPool2d) and blk.idpath[1][0].kernel_size == (1, 1)
    assert ResBlock(8, 8, stride=2)(x).shape == (2, 8, 4, 4)
    assert isinstance(ResBlock(8, 16).idpath[0][0], nn.Conv2d)
    assert not ResBlock(8, skip=False).convs[1][1].weight.eq(0).all()     # no skip: no zero init
    out = DenseBlock(8, 4)(x)
    assert out.shape == (2, 12, 7, 7) and torch.equal(out[:, :8], x)
    assert conv_layer(3, 5, stride=2)(torch.randn(2, 3, 10, 10)).shape == (2, 5, 5, 5)


def test_resnet_output_shape_and_encoder():
    net = ResNet((8, 16, 32), n_blocks=2)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert [n for n, _ in net.named_children()] == ['stem', 'stage1', 'stage2', 'head']
    assert len(net.stages) == 2 and n_conv_layers(net) == 3 * 2 * 2          # stem + 2 stages, 2 blocks of 2 convs each
    enc = ResNet((8, 16, 32), n_in=3, n_out=None)
    assert enc(torch.randn(2, 3, 64, 64)).shape == (2, 32, 16, 16)
    assert list(net[:-1]._modules) == ['stem', 'stage1', 'stage2']
    plain = ResNet((8, 16, 32), n_blocks=2, skip=False)
    assert n_conv_layers(plain) == n_conv_layers(net) and plain(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_random_shift_moves_without_cutting():
    from fastai.vision.all import TensorImage
    x = TensorImage(torch.zeros(16, 1, 12, 12)); x[:, :, 4:8, 4:8] = 1.
    y = RandomShift(pad=2)(x, split_idx=0)
    assert y.shape == x.shape and torch.equal(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))
    assert torch.equal(RandomShift(pad=2)(x, split_idx=1), x)


def test_pixel_shift_finds_a_known_shift():
    ref = torch.zeros(1, 28, 28); ref[0, 8:20, 10:16] = 1.; ref[0, 9, 17] = 0.5        # an off-centre stroke
    for down, right in [(0, 0), (2, -1), (-3, 3), (1, 2)]:
        assert pixel_shift(torch.roll(ref, (down, right), dims=(-2, -1)), ref) == (down, right)


def test_augmented_digit_is_the_digit_shifted():
    from lessons_lib.core import Config
    from lessons_lib.mnist import mnist_dls
    dls = mnist_dls(Config(size='tiny'), bs=8, pad=2, step=20)
    torch.manual_seed(0)
    ref, augs, label = augmented_digit(dls, i=3, n=12)
    x, y = dls.train_ds[3]
    assert (ref.squeeze().float() - x.squeeze().float()).abs().max() <= 1 and label == dls.vocab[int(y)]   # decoded back
    shifts = [pixel_shift(a, ref) for a in augs]
    assert all(max(map(abs, s)) <= 2 for s in shifts) and len(set(shifts)) > 1, shifts      # random, within the padding
    for a, s in zip(augs, shifts): assert torch.equal(a, torch.roll(ref, s, dims=(-2, -1))), s


def test_trim_summary_keeps_shapes_and_counts():
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from lessons_lib.train import n_params
    ds = [(torch.randn(1, 28, 28), torch.tensor(i % 10)) for i in range(8)]
    model = course_resnet()
    full = Learner(DataLoaders(DataLoader(ds, bs=4), DataLoader(ds, bs=4)), model, loss_func=F.cross_entropy).summary()
    lines, short = full.splitlines(), trim_summary(full)
    assert len(short.splitlines()) < len(lines)
    shapes = [l.strip() for l in lines if l.startswith(' ') and ' x ' in l]
    assert [l.split('(')[0].strip() for l in short.splitlines() if l.startswith(' ') and ' x ' in l] == shapes
    assert [l for l in short.splitlines() if l.startswith('Total')] == [l for l in lines if l.startswith('Total')]
    import re
    counted = [int(p.replace(',', '')) for p in re.findall(r'([\d,]+) parameters', trim_summary(full, full_groups=0))]
    assert sum(counted) == n_params(model) and len(counted) == len(shapes)
    assert trim_summary('no table here') == 'no table here'


def test_mark_lr_find_titles_and_labels_the_valley():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([1e-4, 1e-3, 1e-2], [2.6, 2.4, 1.9]); ax.plot(1e-3, 2.4, 'o', label='valley')
    mark_lr_find(ax, 1.2e-3)
    assert ax.get_title() and [t.get_text() for t in ax.texts] == ['valley: 0.0012'] and ax.texts[0].xy == (1e-3, 2.4)
    fig2, ax2 = plt.subplots(); ax2.plot([1e-4, 1e-2], [2.6, 1.9])
    mark_lr_find(ax2, 3e-3)                                   # no dot: a line at the rate, and its label
    assert ax2.texts[0].get_text() == 'valley: 0.003' and ax2.lines[-1].get_xdata()[0] == 3e-3
    plt.close(fig); plt.close(fig2)


def _trained_tiny_model():
    torch.manual_seed(0)
    model = ResNet((4, 8), n_blocks=1)
    xb, yb = torch.randn(32, 1, 12, 12), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        loss = F.cross_entropy(model(xb), yb); opt.zero_grad(); loss.backward(); opt.step()
    return model, xb, yb


def test_loss_landscape_grid():
    model, xb, yb = _trained_tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    coords, Z = loss_landscape(model, xb, yb, steps=7, span=0.5)
    assert model.training                                                 # its train/eval mode is restored
    assert Z.shape == (7, 7) and coords.shape == (7,) and torch.isfinite(Z).all()
    assert coords[3] == 0 and abs(coords[0] + 0.5) < 1e-6
    with torch.no_grad(): centre = F.cross_entropy(model.eval()(xb), yb).item()
    assert abs(Z[3, 3].item() - centre) < 1e-5
    assert Z.std() > 0                                                   # the grid really moves the weights
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))   # and puts them back
    with pytest.raises(ValueError, match='even'): loss_landscape(model, xb, yb, steps=6)


def test_filter_normalized_direction():
    model, _, _ = _trained_tiny_model()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for di, p in zip(d, model.parameters()):
        if p.dim() == 1: assert (di == 0).all()
        else: assert torch.allclose(di.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-4)


def test_cli_tiny(tiny_run):
    exe = Path(sys.executable).parent/'lesson7'
    tmp_path, r = tiny_run('resnet')
    d = tmp_path/'resnet'
    m = json.loads((d/'metrics.json').read_text())
    for k in ('plain_acc', 'resnet_acc', 'resnet_params', 'train_seconds', 'size', 'data', 'cnn_acc', 'plain_params'):
        assert k in m, k
    assert m['size'] == 'tiny' and m['data'] == 'embedded' and 0 <= m['resnet_acc'] <= 1 and m['resnet_params'] > 0
    for f in ('batch.png', 'curves.png', 'landscape.png'):
        assert (d/f).stat().st_size > 1000, f
    # the lesson's kernel ran with the lessons' OpenMP wait setting (lesson7 sets it before torch loads), unless the user set one
    from lessons_lib.hardware import THREAD_DEFAULTS, WAIT_KEYS
    mine = {k: os.environ[k] for k in WAIT_KEYS if k in os.environ}
    hw = m['hardware']
    assert {k: hw[k] for k in WAIT_KEYS if k in hw} == (mine or THREAD_DEFAULTS), hw
    assert hw['device'] == 'cpu' and hw['cpu_threads'] >= 1 and hw['channels_last_min_width'] == 128, hw
    # --resume loads the checkpoints instead of training again
    r = subprocess.run([str(exe), 'resnet', '--size', 'tiny', '--out', str(tmp_path), '--resume'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resnet: resuming from' in r.stdout and 'its training is complete' in r.stdout
    m2 = json.loads((d/'metrics.json').read_text())
    assert m2['resnet_acc'] == m['resnet_acc'] and m2['train_seconds'] == m['train_seconds']


def test_a_second_run_gives_the_same_numbers(tiny_run, tmp_path):
    "`lesson7 resnet --size tiny` again, in a fresh process: every model starts from the seed, so every number is the same."
    out, _ = tiny_run('resnet')
    r = lesson7('resnet', '--size', 'tiny', '--out', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((d/'resnet'/'metrics.json').read_text()) for d in (out, tmp_path))
    for k in ('cnn_by_hand_acc', 'cnn_acc', 'course_resnet_acc', 'plain_acc', 'resnet_acc', 'lr_find_valley', 'landscape_resnet'):
        assert b[k] == pytest.approx(a[k], abs=1e-9), (k, a[k], b[k])
