"""Lesson 3 speed, measured side by side in one run:
1. a training step with `FeatureLoss` vs with pixel MSE, same generator, same batch (the ratio should be <= 2), for
   the size's generator and for the course's resnet34 U-Net (the VGG16-bn of the loss costs the same for both, so
   the ratio is high for the small CPU generator and low for the course's);
2. crappify throughput: `crappify_folder` (parallel, cached) vs a straightforward single-process PIL loop.

Usage: .venv/bin/python bench/superres_speed.py [--size small|full|tiny] [--reps 5] [--copies 8]
Step times are medians of interleaved repetitions (MSE, feature, MSE, feature, ...), so that a change in the
machine's load hits both alike. On a shared machine, run it twice and read the ratio, not the seconds."""
import argparse, os, random, shutil, statistics, tempfile, time
from pathlib import Path
import torch
from torch import nn
from PIL import Image, ImageDraw

from lessons_lib.core import Config, get_device, use_bf16
from lessons_lib.data import photos_path
from lessons_lib.crappify import crappify_folder, watermark_params, _font
from lessons_lib.losses import FeatureLoss, vgg_features
from lessons_lib.srdata import superres_pairs, SRCrops
from lessons_lib.superres import superres_settings, superres_generator


def step_times(cfg, reps, encoder=None, widths=None):
    "Median seconds of a training step (forward, loss, backward, optimizer step) with MSE and with FeatureLoss."
    st = superres_settings(cfg)
    stage = st.feature_stages[-1]
    pairs = superres_pairs(cfg, st.data)
    ds = SRCrops(pairs['train'], stage.size, n=stage.bs, max_zoom=st.data.max_zoom, wm_frac=st.data.wm_frac, seed=0)
    dev = get_device(cfg)
    x, y = [torch.stack(t).to(dev) for t in zip(*[ds[i] for i in range(stage.bs)])]
    gen = superres_generator(cfg, encoder or st.encoder, widths or st.widths).to(dev).train()
    opt = torch.optim.AdamW(gen.parameters(), lr=1e-4)
    bf16 = use_bf16(cfg, dev)
    mse, fl = nn.MSELoss(), FeatureLoss(vgg_features(cfg).to(dev), amp=bf16)      # exactly as in training
    fl32 = FeatureLoss(vgg_features(cfg).to(dev)) if bf16 else None                # for hardware without fast bf16
    def step(loss_func, amp=bf16):
        "One training step; the forward pass and loss under bfloat16 autocast where training has it (`BF16Autocast`)."
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_func(gen(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        if dev.type == 'cuda': torch.cuda.synchronize()
        return time.perf_counter() - t0
    runs = dict(mse=(mse, bf16), feature=(fl, bf16), **({'mse_fp32': (mse, False), 'feature_fp32': (fl32, False)} if fl32 else {}))
    for f, amp in runs.values(): step(f, amp)             # warm-up
    times = {k: [] for k in runs}
    for _ in range(reps):
        for k, (f, amp) in runs.items(): times[k].append(step(f, amp))
    for f in (fl, fl32):
        if f is not None: f.close()
    return dict(encoder=f"{gen.arch['encoder']} ({gen.arch['widths']} widths)", batch=f'{stage.bs}x3x{stage.size}x{stage.size}', bf16=bf16,
                **{k: statistics.median(v) for k, v in times.items()})


def plain_crappify_loop(files, dest):
    "The straightforward way: one process, one file after the other, PIL only."
    for f in files:
        img = Image.open(f).convert('RGB')
        img = img.resize((img.width // 2, img.height // 2), resample=Image.BILINEAR)
        p = watermark_params(f.name, img.size)
        ImageDraw.Draw(img).text(p['xy'], p['text'], fill=(255, 255, 255), font=_font(p['font_size']))
        img.save(dest/(f.stem + '.jpg'), quality=p['q'])


def crappify_speeds(copies):
    "Images/s of the plain loop, of `crappify_folder` on an empty cache (one worker per core), and on a full cache."
    tmp = Path(tempfile.mkdtemp())
    try:
        src = tmp/'src'; src.mkdir()
        for f in sorted((photos_path(Config())/'images').glob('*.jpg')):
            for i in range(copies): shutil.copyfile(f, src/f'{f.stem}_{i}.jpg')
        files = sorted(src.glob('*.jpg')); n = len(files)
        out = {}
        (tmp/'plain').mkdir()
        t0 = time.perf_counter(); plain_crappify_loop(files, tmp/'plain'); out['plain loop'] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter(); crappify_folder(src, dest=tmp/'par', n_workers=os.cpu_count()); out['crappify_folder, empty cache'] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter(); crappify_folder(src, dest=tmp/'par'); out['crappify_folder, cached'] = n / (time.perf_counter() - t0)
        return n, out
    finally: shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', default='small', choices=['small', 'full', 'tiny'])
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--copies', type=int, default=40, help='copies of each embedded photo for the crappify benchmark')
    ap.add_argument('--encoder', help="generator encoder (default: the size's, as in training), e.g. resnet34")
    ap.add_argument('--widths', help="decoder widths (default: the size's), 'fastai' or 'symmetric'")
    ap.add_argument('--skip-crappify', action='store_true')
    a = ap.parse_args()
    cfg = Config(size=a.size, pretrained='off', bf16=os.environ.get('LESSONS_BF16', 'auto'))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {get_device(cfg)}, load average {os.getloadavg()[0]:.1f}')
    gens = [(a.encoder, a.widths)] if a.encoder or a.widths else [(None, None), ('resnet34', 'fastai')]
    for enc, widths in gens:      # the size's generator (as trained), then the course's resnet34 U-Net
        s = step_times(cfg, a.reps, enc, widths)
        print(f"training step, {s['encoder']} U-Net generator, batch {s['batch']}, in bfloat16 (as training): {s['bf16']}:")
        print(f"  MSE {s['mse']:.3f} s, FeatureLoss {s['feature']:.3f} s -> FeatureLoss / MSE = {s['feature'] / s['mse']:.2f} (target <= 2)")
        if 'feature_fp32' in s:
            print(f"  (all in float32, as on hardware without fast bfloat16: MSE {s['mse_fp32']:.3f} s, FeatureLoss {s['feature_fp32']:.3f} s"
                  f" -> {s['feature_fp32'] / s['mse_fp32']:.2f})")
    if a.skip_crappify: raise SystemExit
    n, c = crappify_speeds(a.copies)
    print(f'crappify, {n} images (the 10 embedded photos x {a.copies} names):')
    for k, v in c.items(): print(f'  {k:30s} {v:8.1f} images/s')
    print(f"  parallel / plain = {c['crappify_folder, empty cache'] / c['plain loop']:.2f}; cached / plain = {c['crappify_folder, cached'] / c['plain loop']:.0f}")
