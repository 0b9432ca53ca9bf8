"Tests of lessons_lib.gan: the critic, its expanded loss/accuracy, the switcher, the GAN loop, checkpoints and the CLI."
import json, math, os, subprocess, sys
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from torch import nn
from lessons_lib.critic import patch_critic, critic_loss, critic_accuracy, expand_target
from lessons_lib.layers import SelfAttention
from lessons_lib.gan import AdaptiveSwitcher, gan_critic_loss, gan_generator_loss, GANLoop, sample_saver
from lessons_lib.weights import CheckpointError


def interrupt_after(epoch, batch):
    "An `after_batch` callback that raises `KeyboardInterrupt` after batch `batch` (1-based) of epoch `epoch`, as Ctrl-C would."
    seen = []
    def _cb(loop):
        if loop.epoch == epoch:
            seen.append(1)
            if len(seen) == batch: raise KeyboardInterrupt(f'simulated Ctrl-C in epoch {epoch}, batch {batch}')
    return _cb


# --- a tiny stand-in generator and data, for the loop's mechanics (the lesson uses lesson 3's U-Net) ---
def standin_gen(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(8, 3, 3, padding=1))

def tiny_critic(seed=1, nf=8):
    torch.manual_seed(seed)
    return patch_critic(nf=nf, n_blocks=1)      # 32 px -> a 5x5 patch map

def tiny_data(n=3, bs=2, size=32):
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(bs, 3, size, size, generator=g), torch.rand(bs, 3, size, size, generator=g)) for _ in range(n)]

class ShuffledDL:
    "Batches in a random order (from torch's global RNG), so resuming must reproduce the shuffle too."
    def __init__(self, data): self.data = data
    def __iter__(self): return iter([self.data[i] for i in torch.randperm(len(self.data))])

def make_loop(critic=None, meta=None, thresh=0.69):
    return GANLoop(standin_gen(), critic or tiny_critic(), F.mse_loss, lr=1e-3, switcher=AdaptiveSwitcher(thresh),
                   meta=meta or dict(size='test'))

def params(m): return {k: v.detach().clone() for k, v in m.named_parameters()}

def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k


# --- the critic ---
def test_critic_shape_and_spectral_norm():
    c = patch_critic(nf=8, n_blocks=2)
    assert c(torch.randn(3, 3, 64, 64)).shape == (3, 1, 5, 5)
    assert patch_critic(nf=8, n_blocks=3)(torch.randn(2, 3, 128, 128)).shape == (2, 1, 5, 5)
    convs = [m for m in c.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert convs and all(hasattr(m, 'parametrizations') and hasattr(m.parametrizations, 'weight') for m in convs)
    assert sum(isinstance(m, SelfAttention) for m in c.modules()) == 1
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in c.modules())
    assert any(isinstance(m, nn.Dropout2d) for m in c.modules())
    w = [m for m in c.modules() if isinstance(m, nn.Conv2d)][1].weight
    assert torch.linalg.matrix_norm(w.detach().flatten(1), ord=2).item() == pytest.approx(1., abs=0.1)

def test_expanded_loss_and_accuracy_on_hand_made_logits():
    logits = torch.tensor([[[[2., -1.], [3., 4.]]], [[[-2., -3.], [1., -5.]]]])
    target = torch.tensor([1, 0])
    assert expand_target(target, logits).shape == logits.shape
    assert critic_accuracy(logits, target).item() == pytest.approx(6 / 8)
    sp = lambda z: math.log1p(math.exp(z))
    want = (sum(sp(-z) for z in (2, -1, 3, 4)) + sum(sp(z) for z in (-2, -3, 1, -5))) / 8
    assert critic_loss(logits, target).item() == pytest.approx(want, rel=1e-6)
    # a flat (bs, n_patches) map works the same way
    assert critic_accuracy(logits.flatten(1), target).item() == pytest.approx(6 / 8)
    big = torch.full((2, 1, 3, 3), 30.)
    assert gan_critic_loss(big, -big).item() == pytest.approx(0., abs=1e-6)
    assert gan_critic_loss(-big, big).item() == pytest.approx(30., rel=1e-3)
    y = torch.rand(2, 3, 8, 8)
    assert gan_generator_loss(-big, y, y + 0.1, F.mse_loss, weights=(1., 50.)).item() == pytest.approx(30. + 50 * 0.01, rel=1e-3)


# --- the switcher ---
def test_switcher_changes_phase_at_the_threshold():
    sw = AdaptiveSwitcher(critic_thresh=0.65)
    assert sw.gen_mode is False
    assert [sw.after_batch(l) for l in (1.0, 0.7, 0.65)] == [False, False, False]
    assert sw.after_batch(0.6499) is True
    assert sw.after_batch(10.) is False          # one generator batch, then back to the critic
    sw2 = AdaptiveSwitcher(critic_thresh=0.65, gen_thresh=2.)
    sw2.after_batch(0.1)
    assert [sw2.after_batch(l) for l in (3., 2.5, 1.9)] == [True, True, False]
    sw3 = AdaptiveSwitcher(); sw3.load_state_dict(sw2.state_dict() | dict(gen_mode=True)); assert sw3.gen_mode


# --- one GAN step moves only the model whose turn it is ---
def test_one_gan_step_changes_only_the_model_in_its_phase():
    loop = make_loop(thresh=100.)               # any critic loss is below 100: critic, then generator
    (x, y), = tiny_data(1)
    g0, c0 = params(loop.gen), params(loop.critic)
    loop.step(x, y)                              # critic step
    g1, c1 = params(loop.gen), params(loop.critic)
    assert all(torch.equal(g0[k], g1[k]) for k in g0)
    assert any(not torch.equal(c0[k], c1[k]) for k in c0)
    assert loop.switcher.gen_mode
    loop.step(x, y)                              # generator step
    g2, c2 = params(loop.gen), params(loop.critic)
    assert all(torch.equal(c1[k], c2[k]) for k in c1)
    assert all(not torch.equal(g1[k], g2[k]) for k in g1)
    assert all(p.requires_grad for p in loop.critic.parameters())
    assert loop.history['gen_mode'] == [False, True]


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_gan_steps_in_mixed_precision(dtype):
    "With `AmpStep` the loop's steps run under autocast (float16 with a loss scaler) and still train each model in its phase."
    from lessons_lib.train import AmpStep
    loop = make_loop(thresh=100.); loop.amp = AmpStep(dtype, 'cpu')
    seen = []
    hook = loop.critic.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    (x, y), = tiny_data(1)
    c0, g0 = params(loop.critic), params(loop.gen)
    loop.step(x, y); loop.step(x, y)                       # critic, then generator
    for _ in range(8): loop.gen_step(x, y)                 # (float16: a step whose gradients overflow is skipped and the scale
                                                           #  halved: measured 5 skips, 65536 -> 2048, before the first update)
    hook.remove()
    assert set(seen) == {dtype}
    assert math.isfinite(loop.history['loss'][0])
    assert any(not torch.equal(c0[k], v) for k, v in params(loop.critic).items())
    assert any(not torch.equal(g0[k], v) for k, v in params(loop.gen).items())
    assert all(p.dtype == torch.float32 for p in loop.gen.parameters())     # weights stay float32
    if dtype is torch.float16: assert 1 <= loop.amp.scale_factor() <= 2 ** 16   # the scaler's start (65536), or halved


# --- checkpoints, interruption and resume ---
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    data, ck = tiny_data(), tmp_path/'gan.pth'
    straight = make_loop().fit(3, ShuffledDL(data))
    first = make_loop()
    with pytest.raises(KeyboardInterrupt): first.fit(3, ShuffledDL(data), ckpt=ck, after_batch=[interrupt_after(1, 2)])
    assert not list(tmp_path.glob('.*tmp'))      # no half-written file left
    saved = torch.load(ck, weights_only=True)
    assert saved['epoch'] == 1                   # the last complete epoch
    resumed = make_loop().load(ck)
    assert resumed.epoch == 1
    for k, v in resumed.gen.state_dict().items(): assert torch.equal(v, saved['gen'][k])
    for k, v in resumed.critic.state_dict().items(): assert torch.equal(v, saved['critic'][k])
    assert resumed.switcher.gen_mode == saved['switcher']['gen_mode']
    resumed.fit(3, ShuffledDL(data), ckpt=ck, after_epoch=[sample_saver(data[0][0], tmp_path/'samples', 'gan')])
    assert sorted(f.name for f in (tmp_path/'samples').iterdir()) == ['gan_02.png', 'gan_03.png']
    assert resumed.epoch == 3 and len(resumed.history['loss']) == len(straight.history['loss'])
    assert resumed.history == straight.history
    assert_same_state(resumed.gen, straight.gen); assert_same_state(resumed.critic, straight.critic)
    assert torch.load(ck, weights_only=True)['epoch'] == 3

def test_bad_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path):
    ck = tmp_path/'gan.pth'
    with pytest.raises(CheckpointError, match='does not exist'): make_loop().load(ck)
    make_loop().fit(1, tiny_data(2), ckpt=ck)
    good = ck.read_bytes()
    bad = tmp_path/'truncated.pth'; bad.write_bytes(good[:len(good) // 2])
    with pytest.raises(CheckpointError, match='truncated.pth.*unreadable'): make_loop().load(bad)
    with pytest.raises(CheckpointError, match="gan.pth.*its critic does not fit"): make_loop(critic=tiny_critic(nf=16)).load(ck)
    with pytest.raises(CheckpointError, match="gan.pth was made with other settings"): make_loop(meta=dict(size='other')).load(ck)
    other = tmp_path/'other.pth'; torch.save(dict(model=torch.zeros(1)), other)
    with pytest.raises(CheckpointError, match='other.pth is not a GAN checkpoint'): make_loop().load(other)
    assert ck.read_bytes() == good               # failed loads never touch the good checkpoint


# --- the CLI, end to end at size tiny (numbers meaningless; files, keys and the resume errors are checked) ---
def _lesson7(*args, env):
    return subprocess.run([str(Path(sys.executable).parent/'lesson7'), 'gan', *args], capture_output=True, text=True, env=env, timeout=900)

def test_cli_tiny_writes_metrics_and_resume_refuses_bad_checkpoints(tmp_path):
    from lessons_lib.core import Config
    from lessons_lib.superres import superres_generator, save_generator
    env = {**os.environ, 'LESSONS_CACHE': str(tmp_path/'cache'), 'LESSONS_PRETRAINED': 'off'}
    out = tmp_path/'results'
    # a lesson-3 generator where `lesson7 all` leaves it: the GAN lesson must pick it up instead of training one
    save_generator(superres_generator(Config(size='tiny', pretrained='off'), 'handwritten', 'symmetric'), out/'superres'/'generator_mse.pth',
                   meta=dict(size='tiny', data='embedded'))
    save_generator(superres_generator(Config(size='tiny', pretrained='off'), 'handwritten', 'symmetric'), out/'superres'/'generator_feature.pth',
                   meta=dict(size='small', data='embedded'))   # another size's: not this one (the lesson reads generator_mse)
    r = _lesson7('--size', 'tiny', '--out', str(out), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    d = out/'gan'
    m = json.loads((d/'metrics.json').read_text())
    for k in ('critic_acc', 'psnr_pretrained', 'psnr_nogan', 'psnr_scratch', 'sharpness_pretrained', 'sharpness_nogan',
              'sharpness_scratch', 'ssim_nogan', 'critic_acc_nogan', 'gan_seconds', 'scratch_seconds'):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert m['gen_source'].endswith('generator_mse.pth') and m['gan_epochs'] == 2
    assert m['scratch_seconds'] >= m['critic_seconds'] + m['gan_seconds'] - 1e-6
    for f in ('gan_grid.png', 'gan_schedule.png', 'nogan_samples.png', 'critic_tiles.png', 'critic.pth', 'gan_nogan.pth', '04_gan.ipynb'):
        assert (d/f).is_file(), f
    assert len(list((d/'samples').glob('nogan_*.png'))) == 2
    assert list((d/'image_gen').glob('*.png')) and not list((tmp_path/'cache').glob('photos-*/image_gen'))   # the data is untouched
    assert torch.load(d/'gan_nogan.pth', weights_only=True)['epoch'] == 2
    # --resume with a truncated GAN checkpoint: a clear error naming it, and the file is left as it was
    good = (d/'gan_nogan.pth').read_bytes()
    (d/'gan_nogan.pth').write_bytes(good[:len(good) // 3]); bad = (d/'gan_nogan.pth').read_bytes()
    r = _lesson7('--size', 'tiny', '--out', str(out), '--resume', env=env)
    assert r.returncode == 1 and 'gan_nogan.pth' in r.stderr and 'unreadable' in r.stderr, r.stderr[-2000:]
    assert (d/'gan_nogan.pth').read_bytes() == bad
    # --resume with a critic checkpoint of another run: refused in one line, before the GAN phase
    (d/'gan_nogan.pth').write_bytes(good)
    ck = torch.load(d/'critic.pth', weights_only=True); ck['meta'] = {**ck['meta'], 'size': 'small'}; torch.save(ck, d/'critic.pth')
    r = _lesson7('--size', 'tiny', '--out', str(out), '--resume', env=env)
    assert r.returncode == 1 and 'critic.pth was made with other settings' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    # --resume after a Ctrl-C during critic pretraining (no critic checkpoint, no GAN checkpoint yet): it trains them
    (d/'critic.pth').unlink(); (d/'gan_nogan.pth').unlink()
    r = _lesson7('--size', 'tiny', '--out', str(out), '--resume', env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (d/'critic.pth').is_file() and torch.load(d/'gan_nogan.pth', weights_only=True)['epoch'] == 2
