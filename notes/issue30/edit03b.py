import json, re
p='nbs/03b_srdata.ipynb'; nb=json.load(open(p))
C=nb['cells']
def src(i): return ''.join(C[i]['source'])
def put(i, s): C[i]['source'] = s.splitlines(keepends=True)
def rep(i, old, new, count=1):
    s = src(i); assert s.count(old) == count, (i, old, s.count(old)); put(i, s.replace(old, new))
i = next(k for k,c in enumerate(C) if 'class SRCrops' in ''.join(c['source']))
rep(i, '''class SRCrops(torch.utils.data.Dataset):
    "(bicubic-upsampled crappy crop, target crop) pairs of `size` px from `pairs`: random if `train`, else fixed."
    def __init__(self, pairs, size, n=None, train=True, max_zoom=None, wm_frac=0.5, crops_per_photo=1, align=1, seed=0, augment=False):
        self.pairs, self.size, self.train, self.max_zoom, self.wm_frac, self.align = list(pairs), size, train, max_zoom, wm_frac, align
''', '''class SRCrops(torch.utils.data.Dataset):
    "(bicubic-upsampled crappy crop, target crop) pairs of `size` px from `pairs`: random if `train`, else fixed; with `mask_margin`, also the watermark's mask."
    n_inp = 1                       # fastai: the input is the first item; the target (and the mask) follow
    def __init__(self, pairs, size, n=None, train=True, max_zoom=None, wm_frac=0.5, crops_per_photo=1, align=1, seed=0, augment=False,
                 mask_margin=None):
        self.pairs, self.size, self.train, self.max_zoom, self.wm_frac, self.align = list(pairs), size, train, max_zoom, wm_frac, align
        self.mask_margin = mask_margin  # px: the watermark's box, grown by this, as a third item (1, size, size) of booleans
''')
rep(i, '''        inp, targ = TensorImage(image_tensor(inp)), TensorImage(image_tensor(targ))     # typed: fastai's `show_batch` knows them
        if self.train and rng.random() < 0.5: inp, targ = inp.flip(-1), targ.flip(-1)
        if self.augment and (k := rng.randrange(4)): inp, targ = inp.rot90(k, (-2, -1)), targ.rot90(k, (-2, -1))   # with the flip: all 8
        return inp, targ
''', '''        inp, targ = TensorImage(image_tensor(inp)), TensorImage(image_tensor(targ))     # typed: fastai's `show_batch` knows them
        items = (inp, targ) if self.mask_margin is None else (inp, targ, self.mask(i, x, y, s, hr, lr))
        if self.train and rng.random() < 0.5: items = tuple(t.flip(-1) for t in items)
        if self.augment and (k := rng.randrange(4)): items = tuple(t.rot90(k, (-2, -1)) for t in items)   # with the flip: all 8
        return items

    def mask(self, i, x, y, s, hr, lr) -> torch.Tensor:
        "The watermark of pair `i` in the crop (x, y, side s, target px): a (1, size, size) boolean mask, its box grown by `mask_margin`."
        l, t, r, b = self.pairs[i].watermark_box(lr.size, hr.size)
        k, g, n = self.size / s, self.mask_margin, self.size
        x0, x1 = max(0, int((l - g - x) * k)), min(n, int(np.ceil((r + g - x) * k)))
        y0, y1 = max(0, int((t - g - y) * k)), min(n, int(np.ceil((b + g - y) * k)))
        m = torch.zeros(1, n, n, dtype=torch.bool)
        if x1 > x0 and y1 > y0: m[:, y0:y1, x0:x1] = True
        return m
''')
i = next(k for k,c in enumerate(C) if 'def superres_dls' in ''.join(c['source']))
rep(i, '''def superres_dls(pairs: dict, stage: Stage, ds: SRDataSettings, seed=0, device=None) -> DataLoaders:
    "fastai `DataLoaders` of `SRCrops` for one training `stage` (random training crops, fixed validation crops)."
    kw = dict(max_zoom=ds.max_zoom, align=ds.align, seed=seed)''', '''def superres_dls(pairs: dict, stage: Stage, ds: SRDataSettings, seed=0, device=None, mask_margin=None) -> DataLoaders:
    "fastai `DataLoaders` of `SRCrops` for one training `stage` (random training crops, fixed validation crops); `mask_margin`: with the watermark's masks."
    kw = dict(max_zoom=ds.max_zoom, align=ds.align, seed=seed, mask_margin=mask_margin)''')
# a check in the notebook: the mask sits where the crappy input differs most from the target
j = next(k for k,c in enumerate(C) if c['cell_type']=='code' and ''.join(c['source']).startswith('ks = []'))
md = {"cell_type": "markdown", "metadata": {}, "source": '''With `mask_margin`, each crop also carries the watermark's box as a mask (the loss of lesson 3 weighs the two
regions apart). The mask sits where the crappy input is furthest from the target: there the input carries the
painted digits.
'''.splitlines(keepends=True)}
code = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": '''mds = SRCrops(pairs['train'], 64, n=64, wm_frac=1., mask_margin=4, seed=cfg.seed)
inp, targ, m = mds[0]
test_eq(m.shape, (1, 64, 64)); test_eq(m.dtype, torch.bool)
err = ((inp - targ)**2).mean(0, keepdim=True)
inside, outside = float(err[m].mean()), float(err[~m].mean())
print(f"squared error of the crappy input: {inside:.4f} inside the mask, {outside:.4f} outside ({inside / outside:.0f}x)")
assert inside > 5 * outside
test_eq(len(SRCrops(pairs['train'], 64, n=4)[0]), 2)          # without `mask_margin`: (input, target), as fastai's pairs
'''.splitlines(keepends=True)}
C[j+1:j+1] = [md, code]
json.dump(nb, open(p,'w'), indent=1, ensure_ascii=False); open(p,'a').write('\n')
