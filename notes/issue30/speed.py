import time, torch, torch.nn.functional as F
from torch import nn
from lessons_lib.core import Config
from lessons_lib.unet import build_unet
from lessons_lib.weights import ImageNetNorm
torch.manual_seed(0)
cfg = Config(size='small', pretrained='off')
def mk(lowres):
    k = 4 if lowres else 1
    u = build_unet(cfg, 3*k, n_in=3*k, encoder='handwritten_wide', widths='symmetric', y_range=(-1.,1.), blur=True, norm_type='weight')
    return u
norm = ImageNetNorm()
x, y = torch.rand(8,3,128,128), torch.rand(8,3,128,128)
for lowres in (False, True, False, True):
    u = mk(lowres); opt = torch.optim.AdamW(u.parameters(), 1e-3)
    f = (lambda a: a + F.pixel_shuffle(u(F.pixel_unshuffle(norm(a),2)),2)) if lowres else (lambda a: a + u(norm(a)))
    for i in range(13):
        if i == 3: t = time.perf_counter()
        loss = F.mse_loss(f(x), y); opt.zero_grad(); loss.backward(); opt.step()
    print('lowres' if lowres else 'full-res', f'{(time.perf_counter()-t)/10*1000:.0f} ms/step', sum(p.numel() for p in u.parameters()))
