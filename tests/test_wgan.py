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
    from lessons_lib.core import Config
    from lessons_lib.wgan import wgan_settings
    ws = wgan_settings(Config(size='tiny'))
    for k in ('gan', 'wgan', 'wgan_gp'):                             # the sweep: every learning rate and seed, judged
        n = m[f'{k}_sweep_runs']
        assert n == len(ws.sweep_lrs) * len(ws.sweep_seeds) and 0 <= m[f'{k}_sweep_collapsed'] <= n, k
    sweep = torch.load(d/'sweep'/f'wgan_lr{ws.sweep_lrs[-1]:g}_seed{ws.sweep_seeds[-1]}'/'wgan.pth', weights_only=True)
    assert sweep['meta']['seed'] == ws.sweep_seeds[-1] and sweep['meta']['settings']['wgan']['lr'] == ws.sweep_lrs[-1]
    assert sweep['epoch'] == ws.sweep_epochs
    any_collapsed = sum(m[f'{k}_sweep_collapsed'] for k in ('gan', 'wgan', 'wgan_gp')) > 0
    assert (d/'sweep_collapsed.png').is_file() == any_collapsed     # the figure of collapsed runs, where there are any
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
        assert again[f'{k}_sweep_collapsed'] == first[f'{k}_sweep_collapsed'], k   # the sweep's runs resumed too


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

def test_a_second_shorter_run_into_the_same_folder_shows_only_its_own_grids(tmp_path):
    "Two trainings afresh into one folder, 4 epochs then 2: the history tiles and GIF show the second's 2 grids only."
    import dataclasses
    from types import SimpleNamespace
    from PIL import Image
    from lessons_lib.core import Config
    from lessons_lib.wgan import (wgan_settings, train_gan, judge_callback, fixed_noise, Images, epoch_grids,
                                  plot_history_tiles, save_gif)
    cfg = Config(size='tiny')
    ws = wgan_settings(cfg)
    ds = Images(torch.rand(4 * ws.bs, 1, ws.size, ws.size, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    judge = SimpleNamespace(judge=lambda imgs, feats: dict(confident=0.5))
    (tmp_path/'samples').mkdir(); (tmp_path/'samples'/'wgan_005.png').write_bytes(b'another kind')
    def run(epochs, seed):
        c = dataclasses.replace(cfg, seed=seed)
        return train_gan('gan', c, dataclasses.replace(ws, epochs=epochs), ds, tmp_path, log=lambda s: None,
                         after_epoch=[judge_callback(judge, None, fixed_noise(ws), tmp_path, 'gan')])
    run(4, seed=1)
    first = {f.name: f.read_bytes() for f in epoch_grids(tmp_path, 'gan', 10)}
    assert sorted(first) == [f'gan_{e:03d}.png' for e in (1, 2, 3, 4)]
    second = run(2, seed=2)
    assert second.epoch == 2 and second.history[-1]['confident'] == 0.5
    files = epoch_grids(tmp_path, 'gan', 6)
    assert [f.name for f in files] == ['gan_001.png', 'gan_002.png']
    assert files[-1].read_bytes() != first['gan_002.png']               # the second run's grid, not the first's
    ax = plot_history_tiles(tmp_path, ['gan']).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ['epoch 1', 'epoch 2']
    assert Image.open(save_gif(tmp_path, 'gan')).n_frames == 2
    assert (tmp_path/'samples'/'wgan_005.png').read_bytes() == b'another kind'   # another kind's grids are its own
