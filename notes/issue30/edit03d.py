import json
p='nbs/03_superres.ipynb'; nb=json.load(open(p))
C=nb['cells']
def find(s):
    ks=[k for k,c in enumerate(C) if s in ''.join(c['source'])]; assert len(ks)==1, (s, ks); return ks[0]
def put(i, s): C[i]['source'] = s.strip('\n').splitlines(keepends=True)
i = find("print(f\"PSNR gain over bicubic: MSE {m['mse'] - m['bicubic']:+.2f} dB")
put(i, '''#| slow
mean = lambda r, k: float(np.mean(r[k]))
gain_out = {k: mean(r, 'psnr_outside_wm') - mean(res['bicubic'], 'psnr_outside_wm') for k, r in res.items()}
gain_train = {k: mean(r, 'psnr_outside_wm') - mean(res_train['bicubic'], 'psnr_outside_wm') for k, r in res_train.items()}
inside, ssim_, sharp = ({k: mean(r, key) for k, r in res.items()} for key in ('psnr_inside_wm', 'ssim', 'sharpness'))
for k in res:
    print(f"{k:10} outside the box {gain_out[k]:+.2f} dB over bicubic"
          + (f" ({gain_train[k]:+.2f} on its training photos)" if k in gain_train else '')
          + f", inside it {inside[k]:.2f} dB, SSIM {ssim_[k]:.3f}, sharpness {sharp[k]:.3f}")
if (cfg.size, cfg.data) == ('small', 'embedded'):
    assert gain_out['mse'] >= 0.4 and gain_train['mse'] >= 1.0, (gain_out, gain_train)   # the resolution job, held out and trained on
    assert gain_out['mse'] > gain_out.get('mse_plain', -99), gain_out                   # the box weight is what buys it
    assert inside['mse'] >= 20, inside                                                   # the watermark still goes
    assert ssim_['mse'] > ssim_['bicubic'], ssim_
    assert gain_out['feature'] >= -0.2 and sharp['feature'] > sharp['mse'], (gain_out, sharp)
    assert jobs.loc['feature', 'blockiness'] < jobs.loc['bicubic', 'blockiness'], jobs   # the JPEG blocks go''')
json.dump(nb, open(p,'w'), indent=1, ensure_ascii=False); open(p,'a').write('\n')
