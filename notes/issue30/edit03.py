import json
p='nbs/03_superres.ipynb'; nb=json.load(open(p))
C=nb['cells']
def find(s, start=0):
    ks=[k for k,c in enumerate(C) if s in ''.join(c['source']) and k>=start]; assert len(ks)>=1, s; return ks[0]
def src(i): return ''.join(C[i]['source'])
def put(i, s): C[i]['source'] = s.splitlines(keepends=True)
def rep(i, old, new):
    s = src(i)
    if C[i]['cell_type'] == 'markdown' and s.count(old) != 1: print('SKIP markdown', i, old[:50].replace(chr(10),' ')); return
    assert s.count(old) == 1, (i, old[:60], s.count(old)); put(i, s.replace(old, new))
def md(s): return {"cell_type": "markdown", "metadata": {}, "source": s.strip('\n').splitlines(keepends=True)}
def code(s): return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s.strip('\n').splitlines(keepends=True)}
def insert_after(i, *cells): C[i+1:i+1] = list(cells)

# --- settings
i = find('class SuperresSettings')
rep(i, '''    widths: str = 'symmetric'           # decoder widths: lighter than fastai's (full: 'fastai', the course's)
    mse_stages: tuple = (Stage(128, 8, 8, 3e-3, pct_start=0.3, n_train=960),)    # 960 steps of pixel MSE on 128-px crops''',
'''    widths: str = 'symmetric'           # decoder widths: lighter than fastai's (full: 'fastai', the course's)
    lowres: bool = True                 # the U-Net works at half resolution, a pixel shuffle makes the last 2x (full: False, the course's)
    box_weight: float = 0.1             # a pixel in the watermark's box weighs this much in the MSE (full: 1, the course's plain MSE)
    mse_stages: tuple = (Stage(128, 8, 8, 3e-3, pct_start=0.3, n_train=1440),)   # 1,440 steps of pixel MSE on 128-px crops''')
rep(i, "full=SuperresSettings(encoder='resnet34', widths='fastai', mse_stages=COURSE_STAGES,",
       "full=SuperresSettings(encoder='resnet34', widths='fastai', lowres=False, box_weight=1., mse_stages=COURSE_STAGES,")

# --- the generator
i = find('class ResidualGenerator(nn.Module)')
rep(i, '''class ResidualGenerator(nn.Module):
    "`x + unet(normalize(x))`: a U-Net predicting the correction to its bicubic-upsampled input; [0, 1] in and out."
    def __init__(self, unet: Unet, arch: dict | None = None):
        super().__init__()
        self.unet, self.arch, self.stride = unet, dict(arch or {}), unet.stride
        self.is_pretrained = unet.is_pretrained
        self.norm = ImageNetNorm()

    def forward(self, x):
        x = x.as_subclass(torch.Tensor)                  # fastai's typed images: plain tensors inside the model, for speed
        out = x + self.unet(self.norm(x)).float()
        return out if self.training else out.clamp(0, 1)
''', '''class ResidualGenerator(nn.Module):
    "`x + unet(normalize(x))`: a U-Net predicting the correction to its bicubic-upsampled input; [0, 1] in and out. `arch['lowres']`: at half resolution."
    def __init__(self, unet: Unet, arch: dict | None = None):
        super().__init__()
        self.unet, self.arch = unet, dict(arch or {})
        self.down = 2 if self.arch.get('lowres') else 1  # lowres: the U-Net sees the input pixel-unshuffled (2x2 pixels -> 12 channels)
        self.stride = unet.stride * self.down
        self.is_pretrained = unet.is_pretrained
        self.norm = ImageNetNorm()

    def forward(self, x):
        x = x.as_subclass(torch.Tensor)                  # fastai's typed images: plain tensors inside the model, for speed
        z = self.norm(x)
        if self.down > 1: z = F.pixel_unshuffle(z, self.down)      # lossless: half the resolution, four times the channels
        d = self.unet(z).float()
        if self.down > 1: d = F.pixel_shuffle(d, self.down)        # the last 2x: 12 channels at half resolution -> 3 at full
        out = x + d
        return out if self.training else out.clamp(0, 1)
''')
rep(i, '''def superres_generator(cfg: Config, encoder: str, widths: str, self_attention=False) -> ResidualGenerator:
    "A fresh generator: lesson 2's `Unet` (blur, weight norm, `last_cross`, 3 outputs) on `encoder`, zero-init head."
    unet = build_unet(cfg, 3, encoder=encoder, widths=widths, y_range=(-1., 1.), blur=True, norm_type='weight', self_attention=self_attention)
    conv = unet.head[0]
    nn.init.zeros_(conv.weight); nn.init.zeros_(conv.bias)
    return ResidualGenerator(unet, dict(encoder=encoder, widths=widths, self_attention=self_attention))''',
'''def superres_generator(cfg: Config, encoder: str, widths: str, self_attention=False, lowres=False) -> ResidualGenerator:
    "A fresh generator: lesson 2's `Unet` (blur, weight norm, `last_cross`) on `encoder`, zero-init head; `lowres`: at half resolution."
    n = 12 if lowres else 3          # lowres: 2x2 pixels of 3 channels in and out of the U-Net
    unet = build_unet(cfg, n, n_in=n, encoder=encoder, widths=widths, y_range=(-1., 1.), blur=True, norm_type='weight', self_attention=self_attention)
    conv = unet.head[0]
    nn.init.zeros_(conv.weight); nn.init.zeros_(conv.bias)
    return ResidualGenerator(unet, dict(encoder=encoder, widths=widths, self_attention=self_attention, lowres=lowres))''')
i = find("GENERATOR_ARCH = ('encoder', 'widths', 'self_attention')")
rep(i, "GENERATOR_ARCH = ('encoder', 'widths', 'self_attention')", "GENERATOR_ARCH = ('encoder', 'widths', 'self_attention', 'lowres')")
i = find("gen0 = superres_generator(cfg, st.encoder, st.widths)")
rep(i, "gen0 = superres_generator(cfg, st.encoder, st.widths)", "gen0 = superres_generator(cfg, st.encoder, st.widths, lowres=st.lowres)")
rep(i, "dict(encoder=st.encoder, widths=st.widths, self_attention=False))", "dict(encoder=st.encoder, widths=st.widths, self_attention=False, lowres=st.lowres))")
i15 = find('## The generator: lesson 2\'s U-Net, starting as bicubic')
rep(i15, "the last convolutions (`last_cross`), 3 output channels, an output range, and optional self-attention.",
"the last convolutions (`last_cross`), an output range, and optional self-attention.")
rep(i15, '''with the ImageNet statistics the encoder expects, and clamps to [0, 1] in eval mode, so it takes and returns
ordinary [0, 1] images.''', '''with the ImageNet statistics the encoder expects, and clamps to [0, 1] in eval mode, so it takes and returns
ordinary [0, 1] images.

A second change spends a CPU's steps well (`lowres`). The bicubic input holds no more than the crappy image it
was made from, which has half the resolution, so the U-Net need not work at full resolution: `pixel_unshuffle`
folds each 2×2 block of pixels into 12 channels (losslessly), the whole U-Net runs at half the resolution, and a
pixel shuffle unfolds its 12 output channels into the 3 of the full-resolution correction: the last 2x is a pixel
shuffle, as in the course's upsampling (`PixelShuffle_ICNR`) and in ESPCN (Shi et al. 2016). A quarter of the
pixels makes each step cheaper, measured below; `full` keeps the course's full-resolution U-Net.''')
# the speed measurement, side by side, after the generator's check cell
i = find("gen0 = superres_generator(cfg, st.encoder, st.widths, lowres=st.lowres)")
insert_after(i, md('''Both generators side by side on one batch of the training crops: their parameters and the seconds of one training
step (forward, backward and the optimizer), measured here, on this machine:'''),
code('''step_table = {lr: seconds_per_step(superres_generator(cfg, st.encoder, st.widths, lowres=lr), stage.size, stage.bs, steps=2 if cfg.size == 'tiny' else 5)
              for lr in (False, True)}
for lr, (n, s) in step_table.items(): print(f"{'half resolution + pixel shuffle' if lr else 'full resolution':32} {n / 1e6:.2f} M parameters, {s:.3f} s per step")
speedup = step_table[False][1] / step_table[True][1]
print(f"the half-resolution generator takes {speedup:.1f}x as many steps in the same time")
if cfg.size != 'tiny': assert speedup > 1.5, step_table'''))

# --- seconds_per_step: an exported helper, in the generator's export cell
i = find('def generator_splitter(gen: ResidualGenerator) -> list:')
rep(i, '''def generator_splitter(gen: ResidualGenerator) -> list:
    "fastai splitter for `freeze`/discriminative learning rates: lesson 2's `unet_splitter` (encoder, rest)."
    return unet_splitter(gen.unet)''', '''def generator_splitter(gen: ResidualGenerator) -> list:
    "fastai splitter for `freeze`/discriminative learning rates: lesson 2's `unet_splitter` (encoder, rest)."
    return unet_splitter(gen.unet)

def seconds_per_step(gen: ResidualGenerator, size=128, bs=8, steps=5, warmup=2) -> tuple:
    "(parameters, seconds) of one MSE training step (forward, backward, Adam) of `gen` on a random batch of `bs` `size`-px crops."
    import time
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(bs, 3, size, size, generator=g), torch.rand(bs, 3, size, size, generator=g)
    gen.train(); opt = torch.optim.Adam(gen.parameters(), 1e-4)
    for k in range(warmup + steps):
        if k == warmup: t0 = time.perf_counter()
        loss = F.mse_loss(gen(x), y); opt.zero_grad(); loss.backward(); opt.step()
    return sum(p.numel() for p in gen.parameters()), (time.perf_counter() - t0) / steps''')

# --- psnr_metric, the loss, the metrics, train_generator
i = find('def psnr_metric(pred, targ): return psnr(pred.clamp(0, 1), targ)')
rep(i, 'def psnr_metric(pred, targ): return psnr(pred.clamp(0, 1), targ)', '''def psnr_metric(pred, targ, *mask): return psnr(pred.clamp(0, 1), targ)

class BoxWeightedMSE(nn.Module):
    "Pixel MSE in which a pixel of the watermark's box (`mask`) weighs `box_weight`, one outside 1: sum(w err) / sum(w); 1 is the plain MSE."
    def __init__(self, box_weight=1.): super().__init__(); self.box_weight = float(box_weight)
    def forward(self, pred, targ, mask=None):
        err = ((pred.as_subclass(torch.Tensor).float() - targ.as_subclass(torch.Tensor).float())**2).mean(1, keepdim=True)
        if mask is None or self.box_weight == 1: return err.mean()
        w = torch.where(mask.as_subclass(torch.Tensor), self.box_weight, 1.)
        return (w * err).sum() / w.sum()

class WatermarkShare(Metric):
    "fastai metric: the share of the loss (`BoxWeightedMSE(box_weight)`) that the watermark's box carries on the validation crops."
    def __init__(self, box_weight=1.): self.box_weight = float(box_weight)
    def reset(self): self.inside, self.total = 0., 0.
    def accumulate(self, learn):
        pred, targ, mask = learn.pred, *learn.yb
        err = ((pred.as_subclass(torch.Tensor).float().clamp(0, 1) - targ.as_subclass(torch.Tensor).float())**2).mean(1, keepdim=True)
        inside = float(err[mask].sum()) * self.box_weight
        self.inside += inside; self.total += inside + float(err[~mask].sum())
    @property
    def value(self): return self.inside / self.total if self.total else None
    @property
    def name(self): return 'wm_share\'''')
rep(i, '''class HeldOutPSNR(Metric):
    "fastai metric: the generator's mean PSNR outside the watermark on the whole held-out photos `images` (`eval_images`), each epoch."
    def __init__(self, images, name='heldout_psnr_out'):
        self.images, self._name, self.model = list(images), name, None
        self.masks = [~box_mask(im['target'].shape, im['box'], WM_MARGIN) for im in self.images]''',
'''class HeldOutPSNR(Metric):
    "fastai metric: the generator's mean PSNR outside (or `inside`) the watermark on the whole held-out photos `images` (`eval_images`), each epoch."
    def __init__(self, images, name=None, inside=False):
        self.images, self._name, self.model = list(images), name or ('heldout_psnr_in' if inside else 'heldout_psnr_out'), None
        self.masks = [box_mask(im['target'].shape, im['box'], WM_MARGIN) for im in self.images]
        if not inside: self.masks = [~m for m in self.masks]''')
rep(i, '''def train_generator(gen, loss_func, stages, pairs, st: SuperresSettings, cfg: Config, ckpt=None, meta=None, metrics=(), name='generator',
                    held_out=None, keep_best=False) -> Learner:
    "Train `gen` with `loss_func` through `stages` on `pairs`' crops, checkpointing each epoch to `ckpt`; `learn.seconds`: the training's."
    dev = get_device(cfg)
    make_dls = lambda stage: superres_dls(pairs, stage, st.data, cfg.seed, dev)
    metrics = [*metrics, *([HeldOutPSNR(held_out)] if held_out else [])]''',
'''def train_generator(gen, loss_func, stages, pairs, st: SuperresSettings, cfg: Config, ckpt=None, meta=None, metrics=(), name='generator',
                    held_out=None, keep_best=False, watermark=None) -> Learner:
    "Train `gen` with `loss_func` through `stages` on `pairs`' crops, checkpointing each epoch to `ckpt`; `learn.seconds`: the training's."
    # watermark: a box weight; the batches then carry the watermark's masks (for `BoxWeightedMSE`), and each epoch
    # reports the box's share of the loss (`WatermarkShare`) and, with `held_out`, the PSNR inside the box too
    dev = get_device(cfg)
    margin = None if watermark is None else WM_MARGIN
    make_dls = lambda stage: superres_dls(pairs, stage, st.data, cfg.seed, dev, mask_margin=margin)
    metrics = [*metrics, *([WatermarkShare(watermark)] if watermark is not None else []), *([HeldOutPSNR(held_out)] if held_out else []),
               *([HeldOutPSNR(held_out, inside=True)] if held_out and watermark is not None else [])]''')

# --- the curves: what the loss pays for
i = find('def training_curves(table: dict, bicubic_out: float, best_epoch=None):')
s = src(i) + '''

def loss_share_figure(tables: dict, bicubic_in: float, bicubic_out: float, best=None):
    "Figure: per epoch, for each `epoch_table` of `tables`, the watermark's share of its loss and its held-out PSNR gain outside and inside the box."
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 3, figsize=(12, 3.4))
    for name, t in tables.items():
        ep = np.arange(1, len(t['wm_share']) + 1)
        axs[0].plot(ep, np.array(t['wm_share']) * 100, 'o-', label=name)
        axs[1].plot(ep, np.array(t['heldout_psnr_out']) - bicubic_out, 'o-', label=name)
        axs[2].plot(ep, np.array(t['heldout_psnr_in']) - bicubic_in, 'o-', label=name)
        if best and best.get(name) is not None:
            b = best[name]; axs[1].plot([b + 1], [t['heldout_psnr_out'][b] - bicubic_out], 'r*', ms=12)
    axs[0].set(xlabel='epoch', ylabel='% of the loss', title="the watermark box's share of the loss", ylim=(0, 100))
    axs[1].set(xlabel='epoch', ylabel='dB over bicubic', title='held-out photos: outside the watermark')
    axs[2].set(xlabel='epoch', ylabel='dB over bicubic', title='held-out photos: inside the watermark')
    axs[1].axhline(0, ls='--', c='gray'); axs[2].axhline(0, ls='--', c='gray')
    for a in axs: a.legend(fontsize=8)
    fig.tight_layout()
    return fig'''
put(i, s)

# --- training cells
i = find("with experiment('superres-mse', keep=['gen_mse'")
put(i, '''#| slow
mse_runs = {'mse_plain': 1., 'mse': st.box_weight} if st.box_weight != 1 else {'mse': 1.}   # name: box weight
mse_gens, mse_tables, mse_best, mse_secs = {}, {}, {}, {}
with experiment('superres-mse', keep=['mse_gens', 'mse_tables', 'mse_best', 'mse_secs']):
    for name, w in mse_runs.items():
        seed_everything(cfg)            # the same start and the same crops: only the loss differs
        g = superres_generator(cfg, st.encoder, st.widths, lowres=st.lowres)
        meta = checkpoint_meta(cfg, st, kind=name)
        learn = train_generator(g, BoxWeightedMSE(w), st.mse_stages, pairs, st, cfg, ckpt=out/f'train_{name}.pth', meta=meta,
                                name=f'{name} generator', held_out=ev_images, keep_best=st.keep_best, watermark=w)
        mse_gens[name], mse_tables[name], mse_secs[name] = g, epoch_table(learn), learn.seconds
        mse_best[name] = getattr(learn, 'best_epoch', None)     # the kept epoch, counted from 0
        save_generator(g, out/f'generator_{name}.pth', meta=meta)
        print(f'{name}: box weight {w:g}, {learn.seconds:.0f} s of training')
gen_mse, secs_mse, best_mse = mse_gens['mse'], mse_secs['mse'], mse_best['mse']
mse_history = mse_tables['mse'].get('heldout_psnr_out', [])''')
rep(find('### Step 1: pixel MSE, the baseline'), '''### Step 1: pixel MSE, the baseline
Wrapped in `experiment` (the foundation's memory helper), which reports time and memory and frees everything the
block created except what we keep.''', '''### Step 1: pixel MSE, and what it pays for
The course trained its first generator on the plain pixel MSE. Here the crappy input's error inside the
watermark's box is about seventy times the error elsewhere (measured in `03b_srdata`), and the box covers a tenth
of a crop: most of what the MSE pays for is the watermark. So two generators are trained side by side, from the
same start on the same crops: `mse_plain` on the plain MSE, and `mse` on `BoxWeightedMSE`, in which a pixel of
the box weighs `box_weight` (a tenth) of a pixel elsewhere. Each epoch reports the box's share of the loss on the
held-out crops (`wm_share`, `WatermarkShare`) and the PSNR of the whole held-out photos inside and outside the box.
The batches carry the watermark's mask for this (`superres_dls(..., mask_margin=...)`, from `03b_srdata`).
Wrapped in `experiment` (the foundation's memory helper), which reports time and memory and frees everything the
block created except what we keep.''')
i = find('Epoch by epoch: the loss on the training crops and on the held-out crops')
put(i, '''What each loss pays for, epoch by epoch: the watermark's share of each model's loss (left), and what each
model gains over bicubic on the whole held-out photos, outside the box (middle, the kept epoch starred) and inside
it (right):''')
i = find("save_figure(training_curves(mse_epochs, bicubic_out, best_mse)")
put(i, '''#| slow
bicubic_out = float(np.mean(base['bicubic']['psnr_outside_wm']))
bicubic_in = float(np.mean(base['bicubic']['psnr_inside_wm']))
save_figure(loss_share_figure(mse_tables, bicubic_in, bicubic_out, mse_best), out/'loss_share.png', close=False);
save_figure(training_curves(mse_tables['mse'], bicubic_out, best_mse), out/'training_curves.png', close=False);
if st.keep_best and mse_history: test_eq(mse_history[best_mse], max(mse_history))     # the kept epoch is the best one
for name, t in mse_tables.items():
    print(f"{name}: the box's share of the loss {t['wm_share'][0]:.0%} after the first epoch, {t['wm_share'][-1]:.0%} after the last; "
          f"held-out gain outside the box {max(t['heldout_psnr_out']) - bicubic_out:+.2f} dB at best")''')

# feature stage
i = find("with experiment('superres-feature', keep=['gen_feat'")
rep(i, '''                                name='feature-loss generator', held_out=ev_images)''', '''                                name='feature-loss generator', held_out=ev_images)''')

# results: evaluate all three
i = find("res = evaluate_superres({'mse': gen_mse, 'feature': gen_feat}, ev_images)")
rep(i, "res = evaluate_superres({'mse': gen_mse, 'feature': gen_feat}, ev_images)",
       "res = evaluate_superres({**{k: g for k, g in mse_gens.items() if k != 'mse'}, 'mse': gen_mse, 'feature': gen_feat}, ev_images)")
json.dump(nb, open(p,'w'), indent=1, ensure_ascii=False); open(p,'a').write('\n')
print('ok')
