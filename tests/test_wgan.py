"""Lesson 5 (the Wasserstein GAN) end to end at the tiny size through `lesson7 wgan`: every number the lesson reports,
its figures and checkpoints, a relative --out, --resume, and a damaged judge checkpoint."""
import json, math, os, subprocess, sys
from pathlib import Path
import torch
from conftest import lesson7, BIN, REPO

KINDS = ('gan', 'wgan', 'wgan_gp', 'fastai_wgan')

def test_tiny_run_writes_every_number_figure_and_checkpoint(tiny_run):
    out, r = tiny_run('wgan')
    d = out/'wgan'
    m = json.loads((d/'metrics.json').read_text())
    for k in KINDS:
        assert 0 <= m[f'{k}_confident'] <= 1 and 0 <= m[f'{k}_classes'] <= 10, k
        assert math.isfinite(m[f'{k}_fd']) and m[f'{k}_fd'] >= 0 and m[f'{k}_epochs'] == 2, k
    assert m['train_seconds'] > 0 and m['real_fd'] >= 0 and 0 <= m['judge_accuracy'] <= 1
    assert m['wgan_gen_steps'] < m['gan_gen_steps']                  # 5 critic steps per generator step, against 1
    for f in ('samples.png', 'quality.png', 'history.png', 'gan.pth', 'wgan.pth', 'wgan_gp.pth', 'judge.pth', '05_wgan.ipynb',
              'wgan_gp_history.gif'):
        assert (d/f).is_file(), f
    for k in KINDS: assert len(list((d/'samples').glob(f'{k}_[0-9][0-9][0-9].png'))) == 2, k
    assert 'training one' in r.stdout                                # no lesson 1 ResNet in this --out: the judge is trained
    ck = torch.load(d/'wgan_gp.pth', weights_only=True)
    assert ck['epoch'] == 2 and ck['meta']['kind'] == 'wgan_gp' and len(ck['history']) == 2

def test_relative_out_resume_and_a_damaged_judge(tmp_path):
    run = lambda *a: subprocess.run([str(BIN/'lesson7'), 'wgan', '--size', 'tiny', '--out', 'rel', *a], cwd=tmp_path,
                                    capture_output=True, text=True, timeout=900, env=os.environ.copy())
    r = run()
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path/'rel'/'wgan'                                        # relative to where lesson7 was called, not to nbs/
    assert (d/'metrics.json').is_file() and not (REPO/'nbs'/'rel').exists()
    first = json.loads((d/'metrics.json').read_text())
    (d/'judge.pth').write_bytes(b'not a checkpoint')
    r = run('--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'judge.pth' in r.stdout and 'not used' in r.stdout and 'training one' in r.stdout, r.stdout[-3000:]
    for k in ('gan', 'wgan', 'wgan_gp'): assert f'{k}: resuming from' in r.stdout, k
    again = json.loads((d/'metrics.json').read_text())
    for k in ('gan', 'wgan', 'wgan_gp'):                             # all trained already: the histories are the checkpoints'
        assert again[f'{k}_fd'] == first[f'{k}_fd'] and again[f'{k}_gen_steps'] == first[f'{k}_gen_steps'], k


def test_noise_gans_train_in_float16_with_loss_scaling():
    "Every kind's critic and generator steps run under float16 autocast with a loss scaler (the WGAN-GP penalty on scaled outputs)."
    from lessons_lib.core import Config
    from lessons_lib.train import AmpStep
    from lessons_lib.wgan import wgan_settings, new_gan, KINDS, gradient_penalty, interpolates
    ws = wgan_settings(Config(size='tiny'))
    real = torch.rand(8, 1, ws.size, ws.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for kind in KINDS:
        g = new_gan(kind, Config(size='tiny'), ws)
        g.amp = AmpStep(torch.float16, 'cpu')
        w0 = [p.detach().clone() for p in g.critic.parameters()]
        crit = [g.critic_step(real)[0] for _ in range(4)]
        assert math.isfinite(crit[-1]), (kind, crit)       # (a first step may overflow: the scaler skips it and halves its scale)
        assert math.isfinite(g.gen_step(8)), kind
        assert any(not torch.equal(a, b) for a, b in zip(w0, g.critic.parameters())), kind
    # the penalty from scaled outputs is the penalty (float32 here, so exactly up to rounding)
    torch.manual_seed(0)
    c = new_gan('wgan_gp', Config(size='tiny'), ws).critic
    x = interpolates(real, torch.rand_like(real))
    assert torch.allclose(gradient_penalty(c(x), x, 1024.), gradient_penalty(c(x), x), rtol=1e-4)

def test_a_new_run_into_the_same_folder_shows_only_its_own_grids(tmp_path):
    "A run that starts afresh where a longer run left 22 epochs of grids: its history is its own 2 epochs, not 2 + 20 old."
    from types import SimpleNamespace
    from lessons_lib.wgan import judge_callback, epoch_grids
    samples = tmp_path/'samples'; samples.mkdir()
    for e in range(1, 23): (samples/f'gan_{e:03d}.png').write_bytes(b'old')
    (samples/'wgan_005.png').write_bytes(b'another kind')
    gen = torch.nn.Sequential(torch.nn.Linear(4, 28 * 28), torch.nn.Unflatten(1, (1, 28, 28)))
    loop = SimpleNamespace(gen=gen, device='cpu', history=[])
    cb = judge_callback(SimpleNamespace(judge=lambda imgs, feats: dict(confident=0.5)), None, torch.randn(8, 4), tmp_path, 'gan')
    for e in (1, 2): loop.history.append(dict(epoch=e)); cb(loop)
    assert [f.name for f in epoch_grids(tmp_path, 'gan', 6)] == ['gan_001.png', 'gan_002.png']
    assert (samples/'gan_002.png').read_bytes() != b'old' and (samples/'wgan_005.png').is_file()
    assert loop.history[-1]['confident'] == 0.5
