import json
p='nbs/03_superres.ipynb'; nb=json.load(open(p))
C=nb['cells']
def find(s, start=0):
    ks=[k for k,c in enumerate(C) if s in ''.join(c['source']) and k>=start]; assert len(ks)>=1, s; return ks[0]
def src(i): return ''.join(C[i]['source'])
def put(i, s): C[i]['source'] = s.strip('\n').splitlines(keepends=True)
def rep(i, old, new):
    s = src(i)
    if C[i]['cell_type'] == 'markdown' and s.count(old) != 1: print('SKIP markdown', i, old[:50].replace(chr(10),' ')); return
    assert s.count(old) == 1, (i, old[:60], s.count(old)); put(i, s.replace(old, new))
def md(s): return {"cell_type": "markdown", "metadata": {}, "source": s.strip('\n').splitlines(keepends=True)}
def code(s): return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": s.strip('\n').splitlines(keepends=True)}
def insert_after(i, *cells): C[i+1:i+1] = list(cells)

# zoomed crops after the comparison grid
i = find("save_figure(comparison_grid(res, ev_images), out/'superres_grid.png', close=False);")
insert_after(i, md('''The resolution job, up close: for each held-out photo, the 48-px window away from the watermark where bicubic's
error is largest (edges and texture, where resolution shows), for the crappy input, each model and the photo, each
titled with its PSNR on that window:'''),
code('''#| export
def hardest_window(bicubic, target, box, size=48, step=8, pad=8) -> tuple:
    "(left, top) of the `size`-px window of `target`, clear of `box` grown by `pad`, where `bicubic`'s squared error is largest."
    err = ((bicubic - target)**2).mean(0)[None, None]
    sums = F.avg_pool2d(err, size, stride=step)[0, 0]                  # window (iy, ix) starts at (iy * step, ix * step)
    ys, xs = torch.arange(sums.shape[0]) * step, torch.arange(sums.shape[1]) * step
    l, t, r, b = box
    hits = ((ys[:, None] < b + pad) & (ys[:, None] + size > t - pad)) & ((xs[None] < r + pad) & (xs[None] + size > l - pad))
    k = int(sums.masked_fill(hits, -1.).argmax())
    return int(xs[k % sums.shape[1]]), int(ys[k // sums.shape[1]])

def zoom_figure(res: dict, images: list, methods=('bicubic', 'mse', 'feature'), size=48):
    "Figure: per photo, its `hardest_window` away from the watermark: crappy | `methods` | target, each titled with its PSNR there."
    import matplotlib.pyplot as plt
    cols = ['crappy', *[m for m in methods if m in res], 'target']
    fig, axs = plt.subplots(len(images), len(cols), figsize=(2.1 * len(cols), 2.5 * len(images)), squeeze=False)
    for k, im in enumerate(images):
        x, y = hardest_window(res['bicubic']['outputs'][k], im['target'], im['box'], size)
        H, W = im['target'].shape[-2:]
        crappy = image_tensor(im['lr'].resize((W, H), Image.NEAREST))
        cut = lambda t: t[:, y:y + size, x:x + size].clamp(0, 1)
        for j, (c, pic) in enumerate(zip(cols, [crappy, *[res[m]['outputs'][k] for m in cols[1:-1]], im['target']])):
            ax = axs[k, j]
            ax.imshow(cut(pic).permute(1, 2, 0), interpolation='nearest'); ax.axis('off')
            title = c if c == 'target' else f'{c}\\n{psnr(cut(pic), cut(im["target"])).item():.2f} dB'
            ax.set_title((f"{im['name']} ({x}, {y})\\n" if j == 0 else '\\n') + title, fontsize=8)
    fig.suptitle(f'Away from the watermark: {size}x{size} px where bicubic errs most', fontsize=10)
    fig.tight_layout()
    return fig'''),
code('''#| slow
save_figure(zoom_figure(res, ev_images, methods=('bicubic', *mse_gens, 'feature')), out/'superres_zoom.png', close=False);'''))

# per photo, and the training photos
i = find("quality_table(res, ev_images, keys=('psnr_outside_wm', 'blockiness')).round(3)")
insert_after(i, md('''The same job on the photos the models trained on (their first crappified version, whole): how much of the
resolution job each loss learned at all, before the question of how well it carries to new photos:'''),
code('''#| slow
train_images = eval_images([p for p in pairs['train'] if p.name == p.hr.name], st.data)
res_train = evaluate_superres(mse_gens, train_images)
quality_table(res_train, train_images, keys=('psnr_outside_wm',)).round(3)'''))

# metrics
i = find("steps = lambda stages: sum(s.epochs")
rep(i, '''metrics['blockiness_target'] = float(np.mean([blockiness(im['target']).item() for im in ev_images]))''',
'''metrics['blockiness_target'] = float(np.mean([blockiness(im['target']).item() for im in ev_images]))
metrics.update({f'psnr_outside_wm_train_{m}': float(np.mean(r['psnr_outside_wm'])) for m, r in res_train.items()})
metrics.update({f'psnr_outside_wm_{m}_{im["name"].rsplit(".", 1)[0]}': v for m, r in res.items() for im, v in zip(ev_images, r['psnr_outside_wm'])})
metrics.update({f'train_seconds_{m}': s for m, s in mse_secs.items()})
metrics.update({f'wm_share_per_epoch_{m}': t['wm_share'] for m, t in mse_tables.items()})
metrics.update({f'heldout_psnr_in_per_epoch_{m}': t['heldout_psnr_in'] for m, t in mse_tables.items()})
metrics.update(box_weight=st.box_weight, lowres=st.lowres, seconds_per_step_full_res=step_table[False][1], seconds_per_step_lowres=step_table[True][1])''')
json.dump(nb, open(p,'w'), indent=1, ensure_ascii=False); open(p,'a').write('\n')
print('ok')
