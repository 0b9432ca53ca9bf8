"""The GPU box, checked in one run: each lesson at `full` size, ours beside fastai's stock equivalent on the same data.

For lessons 2-5 it trains a few hundred steps of ours and of fastai's own version on the same batches (course-layout
stand-in data fabricated on the fly at the course's image sizes, random-init ImageNet weights under torchvision's
names: nothing from a network) and prints images per second, peak GPU memory and their ratio:
- lesson 2: our `Unet` on a resnet34 encoder against `unet_learner(resnet34).to_fp16()`, CamVid at half size (352 x 480);
- lesson 3: our generator and feature loss against the course's: `unet_learner(resnet34, blur, weight norm,
  self-attention).to_fp16()` with a feature loss built on `hook_outputs`, crappified pets at 128 px;
- lesson 4: our GAN loop against `GANLearner.from_learners` (adaptive switcher) on the same generator and critic;
- lesson 5: our WGAN loop against `GANLearner.wgan`, LSUN-layout bedrooms at 64 px.
Then one full epoch of lesson 1 at `full` (the embedded digits) with its accuracy. Ours trains as the lessons do
(`lessons_lib.hardware`: bf16 autocast where the GPU has it, channels-last); `metrics` below says what was used.

    bench/gpu_check.sh [--steps 200] [--lessons 1 2 3 4 5]      # on a CUDA GPU, about 8 minutes in all
    bench/gpu_check.sh --smoke                                  # every code path on the CPU at tiny sizes, CUDA parts skipped

Without CUDA (and without --smoke) it stops at once with one line.
"""
import argparse, os, sys, tempfile, time
from dataclasses import replace
from pathlib import Path


def fail(msg):
    print(f'gpu_check: {msg}', file=sys.stderr); sys.exit(2)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=200, help='training steps measured for each model (after a warm-up)')
    p.add_argument('--warmup', type=int, default=20)
    p.add_argument('--lessons', nargs='+', type=int, default=[1, 2, 3, 4, 5], choices=[1, 2, 3, 4, 5])
    p.add_argument('--smoke', action='store_true', help='run every part on the CPU at tiny sizes for a few steps (a test of this script)')
    p.add_argument('--work', type=Path, help='folder for the fabricated data (default: a temporary one)')
    return p.parse_args(argv)


# ---- timing ----------------------------------------------------------------------------------------------------------

class Meter:
    "Counts training images from step `warmup` to step `warmup + steps`, then stops; images/s and peak GPU memory."
    def __init__(self, steps, warmup, cuda):
        self.steps, self.warmup, self.cuda, self.i, self.images, self.t0, self.seconds = steps, warmup, cuda, 0, 0, None, None

    def _sync(self):
        if self.cuda:
            import torch; torch.cuda.synchronize()

    def start(self):
        if self.cuda:
            import torch; torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()

    def now(self) -> float:
        "The time, once the GPU has finished what it was given."
        self._sync(); return time.perf_counter()

    def step(self, n_images) -> bool:
        "Record one training step of `n_images`; True once enough are measured."
        self.i += 1
        if self.i == self.warmup: self.t0 = self.now()
        elif self.i > self.warmup: self.images += n_images
        if self.i >= self.warmup + self.steps:
            self.seconds = self.now() - self.t0
            return True
        return False

    def result(self, images=None, seconds=None) -> dict:
        "Images per second (the steps counted, or `images` in `seconds` measured by the caller) and peak GPU memory since `start`."
        import torch
        images, seconds = (self.images, self.seconds) if images is None else (images, seconds)
        mem = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
        return dict(ips=images / seconds if seconds else float('nan'), mem_mb=mem, seconds=seconds)


def meter_cb(meter):
    "A fastai callback feeding `meter` every training batch; it cancels the fit when the meter has enough."
    from fastai.callback.core import Callback, CancelFitException, CancelValidException
    from fastai.torch_core import find_bs
    class MeterCB(Callback):
        order = 99
        def before_fit(self): meter.start()
        def before_validate(self): raise CancelValidException
        def after_batch(self):
            if self.training and meter.step(find_bs(self.yb)): raise CancelFitException
    return MeterCB()


def fit_metered(learn, lr, meter, stage=None):
    "Train `learn` until `meter` has its steps: through the lessons' `fit_stages` (ours) or plain `fit` (fastai's)."
    from lessons_lib.train import Stage, fit_stages
    learn.add_cb(meter_cb(meter))
    with learn.no_bar(), learn.no_logging():
        if stage is not None: fit_stages(learn, [replace(stage, epochs=10_000)], pretrained=True)
        else: learn.fit(10_000, lr)
    return meter.result()


# ---- the lessons -----------------------------------------------------------------------------------------------------

def lesson2(cfg, a, dev, new_meter):
    from fastai.vision.learner import unet_learner
    from fastai.losses import CrossEntropyLossFlat
    from torchvision.models import resnet34
    from lessons_lib.core import amp_dtype
    from lessons_lib.segdata import seg_path, read_codes
    from lessons_lib.unet import unet_settings, unet_encoder_for, stage_dls, seg_learner, Unet
    st = unet_settings(cfg)
    path = seg_path(cfg); codes = read_codes(path); void = codes.index('Void')
    stage = st.stages[0]
    dls = stage_dls(st, path, dev)(stage)
    ours = seg_learner(dls, Unet(unet_encoder_for(cfg, st), len(codes)).to(dev), len(codes), void, amp=amp_dtype(cfg, dev))
    r_ours = fit_metered(ours, stage.lr, new_meter(), stage)
    stock = unet_learner(dls, resnet34, pretrained=False, n_out=len(codes), loss_func=CrossEntropyLossFlat(axis=1)).to_fp16()
    r_stock = fit_metered(stock, stage.lr, new_meter())
    return f'U-Net, CamVid {stage.size}, batch {stage.bs}', r_ours, r_stock, "unet_learner(resnet34).to_fp16()"


class CourseFeatureLoss:
    "The course's feature loss, built as it was: `hook_outputs` on the VGG layers before each max-pool; pixel L1 + feature L1 + gram L1."
    def __init__(self, m_feat, layer_ids, layer_wgts, gram_wgt):
        from fastai.callback.hook import hook_outputs
        self.m_feat, self.wgts, self.gram_wgt = m_feat, layer_wgts, gram_wgt
        self.hooks = hook_outputs([m_feat[i] for i in layer_ids], detach=False)

    def _features(self, x, clone=False):
        self.m_feat(x)
        return [(o.clone() if clone else o) for o in self.hooks.stored]

    def __call__(self, pred, targ):
        import torch.nn.functional as F
        from lessons_lib.losses import gram_matrix
        t_feat, p_feat = self._features(targ, clone=True), self._features(pred)
        loss = F.l1_loss(pred, targ)
        for p, t, w in zip(p_feat, t_feat, self.wgts):
            loss = loss + w * F.l1_loss(p, t) + self.gram_wgt * w ** 2 * F.l1_loss(gram_matrix(p), gram_matrix(t))
        return loss


def _superres(cfg, dev):
    from lessons_lib.superres import superres_settings
    from lessons_lib.srdata import superres_pairs, superres_dls
    st = superres_settings(cfg)
    pairs = superres_pairs(cfg, st.data)
    stage = st.feature_stages[0]
    return st, pairs, stage, superres_dls(pairs, stage, st.data, cfg.seed, dev)


def lesson3(cfg, a, dev, new_meter):
    from fastai.vision.learner import unet_learner
    from fastai.layers import NormType
    from torchvision.models import resnet34
    from lessons_lib.core import amp_dtype
    from lessons_lib.losses import feature_loss, vgg_features, COURSE_LAYER_IDS, COURSE_LAYER_WEIGHTS, COURSE_GRAM_WEIGHT
    from lessons_lib.superres import superres_generator, superres_learner
    st, pairs, stage, dls = _superres(cfg, dev)
    with feature_loss(cfg, dev) as fl:
        ours = superres_learner(superres_generator(cfg, st.encoder, st.widths).to(dev), fl, dls, st, amp_dtype(cfg, dev))
        r_ours = fit_metered(ours, stage.lr, new_meter(), stage)
    course_fl = CourseFeatureLoss(vgg_features(cfg).to(dev).eval().requires_grad_(False), COURSE_LAYER_IDS, COURSE_LAYER_WEIGHTS, COURSE_GRAM_WEIGHT)
    stock = unet_learner(dls, resnet34, pretrained=False, n_out=3, blur=True, norm_type=NormType.Weight, self_attention=True,
                         y_range=(-3., 3.), loss_func=course_fl, wd=1e-3).to_fp16()
    r_stock = fit_metered(stock, stage.lr, new_meter())
    course_fl.hooks.remove()
    return f'super-resolution, feature loss, {stage.size} px, batch {stage.bs}', r_ours, r_stock, 'unet_learner(resnet34, ...).to_fp16() + hook_outputs feature loss'


def lesson4(cfg, a, dev, new_meter):
    import torch
    from torch import nn
    from functools import partial
    from fastai.learner import Learner
    from fastai.optimizer import Adam
    from fastai.vision.gan import GANLearner, AdaptiveGANSwitcher, AdaptiveLoss
    from lessons_lib.gan import gan_settings, new_critic, gan_loop, content_loss
    from lessons_lib.superres import superres_generator
    from lessons_lib.srdata import superres_dls
    st, pairs, _, _ = _superres(cfg, dev)
    gs = gan_settings(cfg); stage = gs.gan_stages[0]
    dl = superres_dls(pairs, stage, st.data, cfg.seed, dev)
    loop = gan_loop(superres_generator(cfg, st.encoder, st.widths).to(dev), new_critic(gs).to(dev), cfg, gs)
    meter = new_meter(); meter.start()
    class Enough(Exception): pass
    def count(lp):
        if meter.step(stage.bs): raise Enough
    try: loop.fit(10_000, dl.train, after_batch=[count])
    except Enough: pass
    r_ours = meter.result(); loop.close()
    closs = content_loss(gs.content, cfg, dev)
    gen_learn = Learner(dl, superres_generator(cfg, st.encoder, st.widths).to(dev), loss_func=closs)
    crit_learn = Learner(dl, nn.Sequential(new_critic(gs), nn.Flatten()).to(dev), loss_func=AdaptiveLoss(nn.BCEWithLogitsLoss()))
    stock = GANLearner.from_learners(gen_learn, crit_learn, switcher=AdaptiveGANSwitcher(critic_thresh=gs.critic_thresh),
                                     weights_gen=gs.weights, show_img=False, opt_func=partial(Adam, mom=gs.betas[0], sqr_mom=gs.betas[1])).to_fp16()
    r_stock = fit_metered(stock, stage.lr, new_meter())    # (no_logging: GANLearner prints a row per epoch)
    if hasattr(closs, 'close'): closs.close()
    return f'GAN phase, {stage.size} px, batch {stage.bs}', r_ours, r_stock, 'GANLearner.from_learners(...).to_fp16()'


def lesson5(cfg, a, dev, new_meter):
    from lessons_lib.wgan import wgan_settings, gan_data, new_gan, fastai_wgan
    ws = wgan_settings(cfg)
    ws = replace(ws, n_eval=min(ws.n_eval, 256))       # held-out images are for the lesson's judge; the check needs training ones
    ds, _ = gan_data(cfg, ws)
    n_batches = len(ds) // ws.bs
    loop = new_gan('wgan', cfg, ws, 3, dev)
    meter = new_meter(); meter.start()
    loop.fit(ds, 1)                                                    # warm-up epoch
    epochs = max(1, -(-a.steps // max(1, n_batches)))
    gen0, t0 = loop.gen_steps, meter.now()
    loop.fit(ds, 1 + epochs)
    r_ours = meter.result(images=(epochs * n_batches + loop.gen_steps - gen0) * ws.bs, seconds=meter.now() - t0)
    secs = r_ours['seconds']
    meter = new_meter(); meter.start()
    learn = fastai_wgan(cfg, replace(ws, budget_s=secs, epochs=10_000), ds, n_channels=3, device=dev)
    r_stock = meter.result(images=len(learn.recorder.losses) * ws.bs, seconds=learn.seconds)   # a loss a training batch, critic's or generator's
    return f'WGAN, {ws.size} px, batch {ws.bs}, {secs:.0f} s each', r_ours, r_stock, 'GANLearner.wgan(...)'


def lesson1(cfg, a, dev):
    "One full epoch of lesson 1's ResNet at `full` on the embedded digits: seconds and accuracy."
    from lessons_lib.core import amp_dtype
    from lessons_lib.mnist import mnist_dls
    from lessons_lib.resnet import resnet_settings, make_model
    from lessons_lib.train import train_classifier, precision_cbs
    st = resnet_settings(cfg)
    dls = mnist_dls(cfg, bs=st.bs, pad=st.pad, step=st.step)
    learn = train_classifier(make_model(st).to(dev), dls, 1, st.resnet_lr, wd=st.wd, cbs=precision_cbs(amp_dtype(cfg, dev)))
    return dict(seconds=learn.seconds, accuracy=float(learn.validate()[1]), n_train=len(dls.train_ds), bs=st.bs)


# ---- main ------------------------------------------------------------------------------------------------------------

def main(argv=None):
    a = parse(argv)
    import warnings
    warnings.filterwarnings('ignore', category=FutureWarning)      # torch's pynvml notice: the no-GPU answer stays one line
    warnings.filterwarnings('ignore', message='You are shadowing an attribute')     # fastai's GANLearner, every time
    if a.smoke: warnings.filterwarnings('ignore', message='.*CUDA is not available')  # fastai's to_fp16 on the CPU: off, as it says
    from lessons_lib.hardware import configure_threads
    configure_threads(quiet=True)
    import torch
    if not a.smoke and not torch.cuda.is_available():
        fail('no CUDA GPU here (torch.cuda.is_available() is False): run this on a GPU box, or add --smoke to try its code paths on the CPU')
    if a.smoke: a.steps, a.warmup = min(a.steps, 2), 1
    work = Path(a.work or tempfile.mkdtemp(prefix='gpu_check-'))
    dev = torch.device('cpu' if a.smoke else 'cuda')
    size = 'tiny' if a.smoke else 'full'
    from lessons_lib.standins import standin_home
    from fastai.learner import defaults
    from fastai.callback.progress import ProgressCallback
    defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]    # one line per lesson, no progress bars
    t0 = time.perf_counter()
    # course sizes: CamVid 960 x 720, pets about 500 x 375, LSUN bedrooms with a short side of 256 (the lesson crops 64)
    home = standin_home(work, mnist=None, camvid=dict(n=8 if a.smoke else 48, size=(160, 120) if a.smoke else (960, 720)),
                        pets=dict(n=12 if a.smoke else 64, sides=((300, 500), (300, 450))),
                        lsun=dict(n=120 if a.smoke else 2048, sides=(40, 80) if a.smoke else (256, 340)))
    os.environ.update(home['env'])
    print(f"gpu_check: {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'CPU (--smoke: CUDA parts skipped)'}; "
          f"stand-in data in {time.perf_counter() - t0:.0f} s under {work}", flush=True)
    from lessons_lib.core import Config, hardware_used
    cfg = Config(size=size, data='course', pretrained='on', device=str(dev), out=str(work/'out'))
    print(f'gpu_check: ours trains with {hardware_used(cfg)}', flush=True)
    new_meter = lambda: Meter(a.steps, a.warmup, dev.type == 'cuda')
    failed = []
    for n, fn in ((2, lesson2), (3, lesson3), (4, lesson4), (5, lesson5)):
        if n not in a.lessons: continue
        t1 = time.perf_counter()
        try: what, ours, stock, stock_name = fn(cfg, a, dev, new_meter)
        except Exception as e:
            failed.append(n); print(f'lesson {n}: FAILED: {type(e).__name__}: {" ".join(str(e).split())[:300]}', flush=True); continue
        mem = lambda r: f"{r['mem_mb']:.0f} MB" if r['mem_mb'] is not None else 'n/a on CPU'
        ratio_mem = f", memory ours/fastai {ours['mem_mb'] / stock['mem_mb']:.2f}x" if ours['mem_mb'] and stock['mem_mb'] else ''
        print(f"lesson {n} ({what}; {time.perf_counter() - t1:.0f} s): ours {ours['ips']:.1f} images/s, peak {mem(ours)}; "
              f"fastai's {stock_name} {stock['ips']:.1f} images/s, peak {mem(stock)}; speed ours/fastai {ours['ips'] / stock['ips'] if stock['ips'] else float('nan'):.2f}x{ratio_mem}", flush=True)
    if 1 in a.lessons:
        t1 = time.perf_counter()
        try:
            r = lesson1(replace(cfg, data='embedded'), a, dev)
            print(f"lesson 1 (ResNet at full, one epoch of {r['n_train']} digits, batch {r['bs']}; {time.perf_counter() - t1:.0f} s): "
                  f"{r['seconds']:.1f} s of training, accuracy {r['accuracy']:.3f}", flush=True)
        except Exception as e:
            failed.append(1); print(f'lesson 1: FAILED: {type(e).__name__}: {" ".join(str(e).split())[:300]}', flush=True)
    print(f'gpu_check: {time.perf_counter() - t0:.0f} s in all' + (f'; failed: lessons {failed}' if failed else ''), flush=True)
    if failed: sys.exit(1)


if __name__ == '__main__': main()
