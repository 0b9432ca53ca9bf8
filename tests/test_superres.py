"Tests of lesson 3: crappify, the metrics, the losses, the super-resolution data, inference and the `lesson7 superres` CLI."
import io, json, os, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from lessons_lib.core import Config, LessonsError
from lessons_lib.data import photos_path, embedded_photo_files
from lessons_lib.crappify import (CrappifyError, crappify, crappify_folder, crappify_jpeg, crappy_size, to_rgb,
                                  watermark_box, watermark_params, _font)
from lessons_lib.metrics import psnr, ssim, sharpness_ratio
from lessons_lib.losses import FeatureLoss, gram_matrix, vgg_features
from lessons_lib.srdata import SRCrops, superres_pairs
from lessons_lib.superres import (superres_settings, superres_generator, upscale_tensor, upscale_image, save_generator,
                                  load_generator, upscale_files)


@pytest.fixture(scope='module')
def photo():
    return Image.open(photos_path(Config())/'images'/'rocket.jpg')


# ---- crappify
def test_crappify_deterministic_per_name(photo):
    a, b = crappify_jpeg(photo, 'rocket.jpg'), crappify_jpeg(photo, 'rocket.jpg')
    assert a == b
    assert crappify_jpeg(photo, 'other.jpg') != a
    # the same in another process (python's str hash is salted per process; the seed must not be)
    code = ("from PIL import Image; from lessons_lib.crappify import crappify_jpeg; import hashlib, sys;"
            f"print(hashlib.sha256(crappify_jpeg(Image.open({str(photo.filename)!r}), 'rocket.jpg')).hexdigest())")
    other = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    import hashlib
    assert other == hashlib.sha256(a).hexdigest()


def test_crappify_three_changes(photo):
    lr = crappify(photo, 'rocket.jpg')
    p = watermark_params('rocket.jpg', lr.size)
    # 1. smaller, bilinear
    assert lr.size == crappy_size(photo.size) == (256, 171)
    # 2. different pixels where the text is (white), not elsewhere beyond JPEG noise
    plain = np.asarray(photo.convert('RGB').resize(lr.size, Image.BILINEAR), float)
    diff = np.abs(np.asarray(lr, float) - plain).mean(-1)
    l, t, r, b = watermark_box('rocket.jpg', lr.size)
    inside, overall = diff[t:b, l:r].mean(), diff.mean()
    assert inside > 3 * overall, (inside, overall)
    # 3. a JPEG at quality q: its quantization tables are those PIL writes for q
    assert lr.format == 'JPEG' and 10 <= p['q'] <= 70
    ref = io.BytesIO(); Image.new('RGB', (16, 16)).save(ref, 'JPEG', quality=p['q'])
    assert lr.quantization == Image.open(ref).quantization
    other = io.BytesIO(); Image.new('RGB', (16, 16)).save(other, 'JPEG', quality=p['q'] + 10)
    assert lr.quantization != Image.open(other).quantization


def test_crappify_course_size(photo):
    assert crappify(photo, 'rocket.jpg', min_side=96).size == (144, 96)


def test_to_rgb_modes():
    base = Image.new('RGB', (8, 6), (200, 100, 50))
    for img in [base.convert('L'), base.convert('P'), base.convert('RGBA'), base.convert('LA'), base.convert('CMYK'),
                Image.fromarray(np.full((6, 8), 40000, np.uint16)), Image.fromarray(np.full((6, 8), 0.5, np.float32))]:
        out = to_rgb(img)
        assert out.mode == 'RGB' and out.size == (8, 6), img.mode
    assert to_rgb(Image.fromarray(np.full((6, 8), 65535, np.uint16))).getpixel((0, 0)) == (255, 255, 255)


def test_crappify_folder_bad_inputs(tmp_path):
    src, dest = tmp_path/'src', tmp_path/'out'
    src.mkdir()
    base = Image.new('RGB', (128, 96), (30, 120, 200))
    base.convert('L').save(src/'grey.png'); base.convert('P').save(src/'palette.png'); base.convert('RGBA').save(src/'rgba.png')
    Image.fromarray(np.full((96, 128), 30000, np.uint16)).save(src/'deep.png')
    base.resize((40, 30)).save(src/'small.jpg')
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter('always')
        pairs = crappify_folder(src, min_size=64, dest=dest)
    assert sorted(d.name for _, d in pairs) == ['deep.jpg', 'grey.jpg', 'palette.jpg', 'rgba.jpg']
    msgs = [str(w.message) for w in ws]
    assert any('small.jpg' in m and '40x30' in m for m in msgs), msgs
    # an interrupted run's temp file (its writer's pid has ended) is cleaned up and the output is complete;
    # a live writer's temp file (this process's pid) is left alone
    dead = subprocess.Popen([sys.executable, '-c', 'pass']); dead.wait()
    (dest/f'.grey.jpg.{dead.pid}-abc123.tmp').write_bytes(b'half')
    live = dest/f'.rgba.jpg.{os.getpid()}-def456.tmp'
    live.write_bytes(b'being written')
    (dest/'grey.jpg').unlink()
    crappify_folder(src, min_size=64, dest=dest)
    assert list(dest.glob('.*.tmp')) == [live] and Image.open(dest/'grey.jpg').size == (64, 48)
    live.unlink()
    # a corrupt file: an error naming it, and no output for it
    (src/'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    with pytest.raises(CrappifyError, match='corrupt.jpg'): crappify_folder(src, min_size=64, dest=dest)
    assert not (dest/'corrupt.jpg').exists()


def test_crappify_folder_no_half_files(tmp_path, monkeypatch):
    src, dest = tmp_path/'src', tmp_path/'out'
    src.mkdir(); Image.new('RGB', (128, 96)).save(src/'a.png')
    def half_then_die(self, data):
        with open(self, 'wb') as f: f.write(data[:10])
        raise KeyboardInterrupt
    monkeypatch.setattr(Path, 'write_bytes', half_then_die)
    with pytest.raises(KeyboardInterrupt): crappify_folder(src, dest=dest, n_workers=0)
    assert list(dest.iterdir()) == []


def test_crappify_folder_cached_and_variants():
    d = photos_path(Config())/'images'
    pairs = crappify_folder(d, variants=2)
    assert len(pairs) == 2 * len(embedded_photo_files()) and all(lr.exists() for _, lr in pairs)
    mtimes = [lr.stat().st_mtime_ns for _, lr in pairs]
    assert crappify_folder(d, variants=2) == pairs
    assert [lr.stat().st_mtime_ns for _, lr in pairs] == mtimes          # nothing rewritten
    assert Image.open(pairs[1][1]).tobytes() == crappify(Image.open(pairs[1][0]), pairs[1][0].stem + '~1.jpg').tobytes()


# ---- metrics
def test_psnr_known_values():
    x = torch.rand(2, 3, 20, 24)
    assert psnr(x, x).item() == float('inf')
    assert abs(psnr(x, x + 0.1).item() - 20) < 1e-3
    assert abs(psnr(x, x - 0.05).item() - (-20 * np.log10(0.05))) < 1e-3


def test_ssim_against_skimage():
    from skimage import data as skdata
    from skimage.metrics import structural_similarity
    rng = np.random.default_rng(1)
    for img in [skdata.chelsea()[:80, :100] / 255., skdata.coffee()[100:164, 200:290] / 255.]:
        other = np.clip(img * 0.9 + rng.normal(0, 0.05, img.shape) + 0.05, 0, 1)
        ref = structural_similarity(img, other, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1., channel_axis=-1)
        ours = ssim(torch.tensor(other).permute(2, 0, 1), torch.tensor(img).permute(2, 0, 1)).item()
        assert abs(ours - ref) < 1e-4, (ours, ref)
    x = torch.rand(3, 32, 32)
    assert abs(ssim(x, x).item() - 1) < 1e-6


def test_sharpness_ratio():
    x = torch.rand(3, 40, 40)
    assert abs(sharpness_ratio(x, x).item() - 1) < 1e-6
    blur = torch.nn.functional.avg_pool2d(x[None], 3, 1, 1)[0]
    assert sharpness_ratio(blur, x).item() < 0.5


# ---- losses
def test_gram_matrix_by_hand():
    x = torch.tensor([[[[1., 2], [3, 4]], [[0, 1], [0, 1]]]])
    expected = torch.tensor([[[30., 6], [6, 2]]]) / 8
    assert torch.allclose(gram_matrix(x), expected)


@pytest.fixture(scope='module')
def vgg():
    return vgg_features(Config(pretrained='off'))


def test_feature_loss(vgg):
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    out, targ = a.clone().requires_grad_(), b.clone().requires_grad_()
    with FeatureLoss(vgg) as fl:
        assert fl(a, a).item() == 0
        loss = fl(out, targ)
        assert loss.item() > 0 and all(getattr(fl, n).item() > 0 for n in fl.metric_names)
        assert len(fl.metric_names) == 7
        loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert targ.grad is None
    assert all(p.grad is None for p in vgg.parameters())
    assert sum(len(m._forward_hooks) for m in vgg.modules()) == 0


def test_feature_loss_close(vgg):
    fl = FeatureLoss(vgg)
    assert sum(len(m._forward_hooks) for m in vgg.modules()) == 3
    fl.close()
    assert sum(len(m._forward_hooks) for m in vgg.modules()) == 0


# ---- data, generator, inference
def test_no_train_valid_leakage():
    cfg = Config(size='tiny')
    st = superres_settings(cfg)
    pairs = superres_pairs(cfg, st.data)
    train_photos, valid_photos = {p.hr for p in pairs['train']}, {p.hr for p in pairs['valid']}
    assert valid_photos and train_photos and not train_photos & valid_photos
    assert len(train_photos | valid_photos) == len(embedded_photo_files())
    ds = SRCrops(pairs['valid'], 64, train=False, crops_per_photo=2)
    assert {p.hr for p in ds.pairs} == valid_photos and len(ds) == 2 * len(valid_photos)
    tr = SRCrops(pairs['train'], 64, n=16)
    x, y = tr[0]
    assert x.shape == y.shape == (3, 64, 64)


def test_keep_best_epoch_and_resume(tmp_path):
    "The MSE training ends at the epoch with the best held-out PSNR outside the watermark, and a resumed run keeps it."
    from dataclasses import replace
    from torch import nn
    from lessons_lib.core import seed_everything
    from lessons_lib.srdata import eval_images
    from lessons_lib.superres import train_generator
    from lessons_lib.weights import load_checkpoint
    cfg = Config(size='tiny', pretrained='off')
    st = superres_settings(cfg)
    pairs = superres_pairs(cfg, st.data)
    ev = eval_images(pairs['valid'], st.data)
    def run(cfg):
        seed_everything(cfg)
        gen = superres_generator(cfg, st.encoder, st.widths)
        return gen, train_generator(gen, nn.MSELoss(), st.mse_stages, pairs, st, cfg, ckpt=tmp_path/'t.pth', meta={'k': 1},
                                    held_out=ev, keep_best=True)
    gen, learn = run(cfg)
    hist = [float(v[-1]) for v in learn.recorder.values]
    assert len(hist) == sum(s.epochs for s in st.mse_stages) and learn.heldout_history == dict(enumerate(hist))
    assert hist[learn.best_epoch] == max(hist)
    kept = load_checkpoint(tmp_path/'t_best.pth')
    assert kept['history'] == learn.heldout_history
    for k, v in gen.state_dict().items(): assert torch.equal(v.cpu(), kept['model'][k]), k
    last = load_checkpoint(tmp_path/'t.pth')['model']           # the epoch checkpoint holds the last epoch, not the kept one
    if learn.best_epoch != len(hist) - 1: assert any(not torch.equal(last[k], kept['model'][k]) for k in last)
    gen2, learn2 = run(replace(cfg, resume=True))                 # complete: nothing to train, the same kept weights
    assert learn2.best_epoch == learn.best_epoch
    for k, v in gen.state_dict().items(): assert torch.equal(v, gen2.state_dict()[k]), k


def test_whole_photo_inference_odd_sizes(tmp_path):
    gen = superres_generator(Config(size='tiny', pretrained='off'), 'handwritten', 'symmetric')
    for h, w in [(37, 53), (75, 139), (1, 33), (600, 70)]:
        assert upscale_tensor(gen, torch.rand(3, h, w)).shape == (3, h, w)
    img = Image.new('RGB', (51, 29), (10, 20, 30))
    assert upscale_image(gen, img).size == (102, 58)
    assert upscale_image(gen, img, size=(77, 41)).size == (77, 41)
    ck = save_generator(gen, tmp_path/'g.pth')
    g2 = load_generator(ck, Config(size='tiny'))
    x = torch.rand(3, 40, 40)
    assert torch.allclose(upscale_tensor(g2, x), upscale_tensor(gen, x))


def test_upscale_files_errors(tmp_path):
    cfg = Config(size='tiny', out=str(tmp_path))
    with pytest.raises(LessonsError, match='no such file'): upscale_files(cfg, [tmp_path/'missing.png'])
    with pytest.raises(LessonsError, match='is a directory'): upscale_files(cfg, [tmp_path])
    (tmp_path/'notes.txt').write_text('hello')
    with pytest.raises(LessonsError, match='not a readable image'): upscale_files(cfg, [tmp_path/'notes.txt'])
    Image.new('RGB', (8, 8)).save(tmp_path/'ok.png')
    with pytest.raises(LessonsError, match='no trained generator at'): upscale_files(cfg, [tmp_path/'ok.png'])


def test_cli_superres_tiny(tiny_run, tmp_path):
    exe = str(Path(sys.executable).parent/'lesson7')
    out, r = tiny_run('superres')
    d = out/'superres'
    m = json.loads((d/'metrics.json').read_text())
    for k in ['psnr_bicubic', 'psnr_mse', 'psnr_feature', 'ssim_bicubic', 'ssim_mse', 'ssim_feature',
              'sharpness_bicubic', 'sharpness_mse', 'sharpness_feature', 'train_seconds']:
        assert isinstance(m[k], float), k
    assert (d/'superres_grid.png').stat().st_size > 0 and (d/'crappify.png').is_file()
    assert (d/'generator_mse.pth').is_file() and (d/'generator_feature.pth').is_file()
    assert (d/'03_superres.ipynb').is_file()                              # the executed notebook, kept beside its outputs
    from lessons_lib.cli import notebook_fingerprint                       # stamped as a refresh stamps it (lessons-nb adopt)
    stamp = json.loads((d/'03_superres.ipynb').read_text())['metadata']['lessons_lib']
    assert stamp['fingerprint'] == notebook_fingerprint(Path(__file__).parents[1]/'nbs'/'03_superres.ipynb') and stamp['size'] == 'tiny'
    # the jobs in turn (resolution with the box out of the loss, then the watermark), beside the course's plain MSE
    for m_ in ('mse', 'mse_plain'):
        assert (d/f'train_{m_}.pth').is_file() and (d/f'train_{m_}_watermark.pth').is_file(), m_
        for k in ('psnr_outside_wm', 'psnr_inside_wm', 'ssim', 'sharpness', 'psnr_outside_wm_train'): assert isinstance(m[f'{k}_{m_}'], float), (k, m_)
        shares = m[f'wm_share_per_epoch_{m_}']
        assert len(shares) == m['epochs_resolution'] + m['epochs_watermark'], shares
    assert all(s == 0 for s in m['wm_share_per_epoch_mse'][:m['epochs_resolution']])          # box weight 0: the box is out of the loss
    assert all(s > 0 for s in m['wm_share_per_epoch_mse_plain'])
    assert m['box_weight'] == 0 and (d/'loss_share.png').is_file() and (d/'superres_zoom.png').is_file()
    # --image reuses the trained generator, writes into upscaled/ under a name per input path, leaves metrics.json alone
    before = (d/'metrics.json').read_bytes()
    (tmp_path/'a').mkdir(); (tmp_path/'b').mkdir()
    for sub, colour in (('a', (90, 60, 30)), ('b', (10, 200, 30))): Image.new('RGB', (45, 31), colour).save(tmp_path/sub/'small.png')
    r = subprocess.run([exe, 'superres', '--size', 'tiny', '--out', str(out), '--image', str(tmp_path/'a'/'small.png'),
                        '--image', str(tmp_path/'b'/'small.png')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    outs = sorted((d/'upscaled').glob('small-*_x2.png'))
    assert len(outs) == 2 and all(Image.open(f).size == (90, 62) for f in outs)          # two inputs, two files
    assert (d/'metrics.json').read_bytes() == before
    r = subprocess.run([exe, 'superres', '--size', 'tiny', '--out', str(out), '--image', str(tmp_path/'nope.jpg')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and 'nope.jpg: no such file' in r.stderr and 'Traceback' not in r.stderr


def test_small_generator_is_the_wide_handwritten_unet_and_reloads(tmp_path):
    "`small` trains the widened handwritten encoder; a checkpoint names it, so `load_generator` rebuilds the same shapes."
    st = superres_settings(Config(size='small'))
    gen = superres_generator(Config(size='small', pretrained='off'), st.encoder, st.widths)
    assert gen.arch['encoder'] == 'handwritten_wide'
    narrow = superres_generator(Config(size='small', pretrained='off'), 'handwritten', st.widths)
    assert sum(p.numel() for p in gen.parameters()) > 2 * sum(p.numel() for p in narrow.parameters())
    g2 = load_generator(save_generator(gen, tmp_path/'g.pth'), Config(size='tiny'))   # the checkpoint's arch wins over the size
    assert g2.arch == gen.arch
    assert {k: v.shape for k, v in g2.state_dict().items()} == {k: v.shape for k, v in gen.state_dict().items()}


# ---- lesson 3's redesign: the watermark's mask, the box-weighted loss, the half-resolution generator
def test_crops_carry_the_watermark_mask_through_flips_and_turns():
    "With `mask_margin`, every crop's mask sits on the painted digits: the crappy input errs far more inside it, flipped or turned."
    cfg = Config(size='tiny')
    pairs = superres_pairs(cfg, superres_settings(cfg).data)
    ds = SRCrops(pairs['train'], 64, n=24, wm_frac=1., mask_margin=4, augment=True, seed=3)
    ratios = []
    for k in range(len(ds)):
        inp, targ, m = ds[k]
        assert m.shape == (1, 64, 64) and m.dtype == torch.bool and 0 < m.float().mean() < 1
        err = ((inp - targ)**2).mean(0, keepdim=True)
        ratios.append(float(err[m].mean() / err[~m].mean()))
    assert min(ratios) > 3, ratios
    # a mask moved off the digits (a wrong flip or offset) would not hold the error: the same crops, masks mirrored
    mirrored = []
    for k in range(len(ds)):
        inp, targ, m = ds[k]
        m2 = m.flip(-1).flip(-2)
        err = ((inp - targ)**2).mean(0, keepdim=True)
        if m2.any() and (~m2).any() and not torch.equal(m2, m): mirrored.append(float(err[m2].mean() / err[~m2].mean()))
    assert np.median(mirrored) < np.median(ratios) / 2, (mirrored, ratios)
    assert len(SRCrops(pairs['train'], 64, n=2)[0]) == 2                 # without a margin: fastai's (input, target)


def test_box_weighted_mse():
    from lessons_lib.superres import BoxWeightedMSE
    g = torch.Generator().manual_seed(0)
    pred, targ = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool); mask[:, :, 2:5, 3:7] = True
    assert torch.allclose(BoxWeightedMSE(1.)(pred, targ, mask), F.mse_loss(pred, targ))
    assert torch.allclose(BoxWeightedMSE(0.3)(pred, targ), F.mse_loss(pred, targ))           # no mask: plain MSE
    err = ((pred - targ)**2).mean(1, keepdim=True)
    w = 0.25
    expected = (w * err[mask].sum() + err[~mask].sum()) / (w * mask.sum() + (~mask).sum())
    assert torch.allclose(BoxWeightedMSE(w)(pred, targ, mask), expected)
    # weight 0: the box does not count at all
    pred2 = pred.clone(); pred2[:, :, 2:5, 3:7] = 5.
    assert torch.allclose(BoxWeightedMSE(0.)(pred2, targ, mask), BoxWeightedMSE(0.)(pred, targ, mask))
    assert not torch.allclose(BoxWeightedMSE(0.1)(pred2, targ, mask), BoxWeightedMSE(0.1)(pred, targ, mask))


def test_watermark_share_metric():
    from types import SimpleNamespace
    from lessons_lib.superres import WatermarkShare
    targ = torch.zeros(1, 3, 4, 4)
    pred = torch.zeros(1, 3, 4, 4); pred[..., 0, 0] = 0.5; pred[..., 3, 3] = 0.25       # errors 0.25 (inside) and 0.0625
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool); mask[..., 0, :2] = True
    for w, share in ((1., 0.25 / 0.3125), (0.1, 0.025 / 0.0875)):
        m = WatermarkShare(w); m.reset()
        m.accumulate(SimpleNamespace(pred=pred, yb=(targ, mask)))
        assert m.value == pytest.approx(share) and m.name == 'wm_share'
    m.reset(); assert m.value is None


def test_half_resolution_generator(tmp_path):
    "`lowres`: a fresh generator is bicubic, its stride doubles, a step is cheaper, and its checkpoint rebuilds it."
    from lessons_lib.superres import seconds_per_step
    cfg = Config(size='tiny', pretrained='off')
    full, low = (superres_generator(cfg, 'handwritten', 'symmetric', lowres=lr) for lr in (False, True))
    assert low.stride == 2 * full.stride and low.arch['lowres'] and not full.arch['lowres']
    low.eval()
    x = torch.rand(2, 3, 2 * low.stride, 3 * low.stride)
    with torch.no_grad(): assert torch.allclose(low(x), x, atol=1e-6)
    assert upscale_tensor(low, torch.rand(3, 37, 53)).shape == (3, 37, 53)           # padded to its stride, cropped back
    with torch.no_grad(): low.unet.head[0].weight.normal_(0, 0.01)                    # trained: no longer the identity
    low.eval()
    ck = save_generator(low, tmp_path/'g.pth')
    g2 = load_generator(ck, cfg)
    assert g2.arch['lowres'] and g2.stride == low.stride
    with torch.no_grad(): assert torch.allclose(g2(x), low(x)) and not torch.allclose(low(x), x, atol=1e-4)
    n_full, s_full = seconds_per_step(full, 64, 4, steps=2)
    n_low, s_low = seconds_per_step(low, 64, 4, steps=2)
    assert n_low > 0 and n_full > 0 and s_low > 0 and s_full > 0


def test_a_checkpoint_without_lowres_loads_as_full_resolution(tmp_path):
    from lessons_lib.weights import save_checkpoint
    cfg = Config(size='tiny', pretrained='off')
    gen = superres_generator(cfg, 'handwritten', 'symmetric')
    save_checkpoint(dict(model=gen.state_dict(), arch=dict(encoder='handwritten', widths='symmetric', self_attention=False), meta={}), tmp_path/'old.pth')
    g2 = load_generator(tmp_path/'old.pth', cfg)
    assert g2.down == 1 and g2.stride == gen.stride


def test_hardest_window_stays_clear_of_the_watermark():
    from lessons_lib.superres import hardest_window
    target = torch.zeros(3, 128, 160)
    bicubic = target.clone()
    bicubic[:, 10:40, 100:140] = 1.             # the largest error of all: inside the box
    bicubic[:, 80:120, 16:56] = 0.5             # the largest outside it
    x, y = hardest_window(bicubic, target, box=(96, 0, 160, 48), size=32, step=8, pad=8)
    assert (x, y) == (24, 88) or (16 <= x <= 24 and 80 <= y <= 88), (x, y)
    assert x + 32 <= 96 - 8 or y >= 48 + 8
