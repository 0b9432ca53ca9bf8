# Issue 30: does leaving the watermark's box out of the loss (weight 0) buy the resolution job, through fastai's loop?
# The half-resolution and the full-resolution generator, the same crops and schedule shape.
import sys, numpy as np
from lessons_lib.core import Config, seed_everything
from lessons_lib.train import Stage
from lessons_lib.srdata import superres_pairs, eval_images
from lessons_lib.superres import superres_settings, superres_generator, train_generator, BoxWeightedMSE, evaluate_superres
cfg = Config(size='small', pretrained='off'); st = superres_settings(cfg)
pairs = superres_pairs(cfg, st.data)
ev = eval_images(pairs['valid'], st.data); tr = eval_images([p for p in pairs['train'] if p.name == p.hr.name], st.data)
b_ev, b_tr = evaluate_superres({}, ev)['bicubic'], evaluate_superres({}, tr)['bicubic']
m = lambda r, k: float(np.mean(r[k]))
for lowres, w, steps in [(True, 0.0, 1440), (False, 0.0, 960)]:
    seed_everything(cfg)
    g = superres_generator(cfg, st.encoder, st.widths, lowres=lowres)
    learn = train_generator(g, BoxWeightedMSE(w), (Stage(128, 8, 8, 3e-3, pct_start=0.3, n_train=steps),), pairs, st, cfg,
                            held_out=ev, watermark=w, name=f'lowres={lowres} w={w}')
    r_ev, r_tr = evaluate_superres({'g': g}, ev)['g'], evaluate_superres({'g': g}, tr)['g']
    print(f"lowres={lowres} box weight {w} {steps} steps {learn.seconds:.0f} s: held-out outside {m(r_ev, 'psnr_outside_wm') - m(b_ev, 'psnr_outside_wm'):+.3f} dB "
          f"(per photo {', '.join(f'{a - b:+.2f}' for a, b in zip(r_ev['psnr_outside_wm'], b_ev['psnr_outside_wm']))}), inside {m(r_ev, 'psnr_inside_wm'):.2f}; "
          f"training photos outside {m(r_tr, 'psnr_outside_wm') - m(b_tr, 'psnr_outside_wm'):+.3f} dB", flush=True)
