# Lesson 3 redesign, item 2: which generator learns the resolution job in a fixed number of steps?
import sys, time, copy, torch, numpy as np, torch.nn.functional as F
from torch import nn
from lessons_lib.core import Config, seed_everything
from lessons_lib.srdata import superres_pairs, SRCrops, eval_images
from lessons_lib.superres import superres_settings, superres_generator, BoxWeightedMSE, evaluate_superres, ResidualGenerator, WM_MARGIN
from lessons_lib.layers import conv_layer
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
cfg = Config(size='small', pretrained='off'); st = superres_settings(cfg)
pairs = superres_pairs(cfg, st.data)
ev = eval_images(pairs['valid'], st.data)
tr = eval_images([p for p in pairs['train'] if p.name == p.hr.name], st.data)
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 400

class LocalHead(nn.Module):
    "conv to nf, n residual 3x3 blocks at the U-Net's output resolution, conv to 12 (zero-init)."
    def __init__(self, ni, nf=32, n=4):
        super().__init__()
        self.inp = nn.Conv2d(ni, nf, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(nf, nf, 3, padding=1), nn.ReLU(), nn.Conv2d(nf, nf, 3, padding=1)) for _ in range(n)])
        self.out = nn.Conv2d(nf, 12, 3, padding=1); nn.init.zeros_(self.out.weight); nn.init.zeros_(self.out.bias)
    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks: h = h + b(h)
        return self.out(h)

class WithHead(nn.Module):
    def __init__(self, g, nf=32, n=4):
        super().__init__(); self.g = g; u = g.unet
        c = u.head[0].in_channels
        self.local = LocalHead(c + 12, nf, n)
        u.head = nn.Identity()           # unet now returns final_conv features
        self.stride = g.stride
    def forward(self, x):
        x = x.as_subclass(torch.Tensor); z = F.pixel_unshuffle(self.g.norm(x), 2)
        f = self.g.unet(z)
        d = self.local(torch.cat([f, z], 1))
        out = x + F.pixel_shuffle(d, 2)
        return out if self.training else out.clamp(0, 1)

class Plain(nn.Module):
    "The issue's kind: a residual CNN at low resolution, pixel shuffle, + bicubic."
    def __init__(self, nf=48, n=6):
        super().__init__(); from lessons_lib.weights import ImageNetNorm; self.norm = ImageNetNorm(); self.local = LocalHead(12, nf, n); self.stride = 2
    def forward(self, x):
        x = x.as_subclass(torch.Tensor); out = x + F.pixel_shuffle(self.local(F.pixel_unshuffle(self.norm(x), 2)), 2)
        return out if self.training else out.clamp(0, 1)

class TwoPath(nn.Module):
    "U-Net (context: the watermark) + a local residual CNN (detail), both on the unshuffled input, summed before the shuffle."
    def __init__(self, g, nf=32, n=4):
        super().__init__(); self.g = g; self.local = LocalHead(12, nf, n); self.stride = g.stride
    def forward(self, x):
        x = x.as_subclass(torch.Tensor); z = F.pixel_unshuffle(self.g.norm(x), 2)
        out = x + F.pixel_shuffle(self.g.unet(z).float() + self.local(z), 2)
        return out if self.training else out.clamp(0, 1)

def make(kind):
    if kind == 'twopath': seed_everything(cfg); return TwoPath(superres_generator(cfg, st.encoder, st.widths, lowres=True))
    seed_everything(cfg)
    if kind == 'unet': return superres_generator(cfg, st.encoder, st.widths, lowres=True)
    if kind == 'unet+head': return WithHead(superres_generator(cfg, st.encoder, st.widths, lowres=True))
    if kind == 'cnn': return Plain()

def train(g, steps, w=0.1, lr=3e-3):
    ds = SRCrops(pairs['train'], 128, n=steps * 8, wm_frac=0.5, mask_margin=WM_MARGIN, seed=0, align=32)
    dl = torch.utils.data.DataLoader(ds, batch_size=8)
    opt = torch.optim.AdamW(g.parameters(), lr, weight_decay=1e-3)
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.3)
    loss_f = BoxWeightedMSE(w); g.train(); t0 = time.time()
    for k, (x, y, m) in enumerate(dl):
        loss = loss_f(g(x), y, m); opt.zero_grad(); loss.backward(); opt.step(); sch.step()
    return time.time() - t0

base_ev = evaluate_superres({}, ev); base_tr = evaluate_superres({}, tr)
b_ev, b_tr = np.mean(base_ev['bicubic']['psnr_outside_wm']), np.mean(base_tr['bicubic']['psnr_outside_wm'])
for kind in sys.argv[3].split(','):
    g = make(kind); n = sum(p.numel() for p in g.parameters())
    secs = train(g, STEPS); g.eval()
    r_ev = evaluate_superres({'g': g}, ev)['g']; r_tr = evaluate_superres({'g': g}, tr)['g']
    print(f"{kind:10} {n/1e6:.2f}M {STEPS} steps {secs:.0f}s: held-out out {np.mean(r_ev['psnr_outside_wm']) - b_ev:+.3f} "
          f"(per photo {', '.join(f'{a-b:+.2f}' for a, b in zip(r_ev['psnr_outside_wm'], base_ev['bicubic']['psnr_outside_wm']))}) "
          f"in {np.mean(r_ev['psnr_inside_wm']):.2f}; train out {np.mean(r_tr['psnr_outside_wm']) - b_tr:+.3f}", flush=True)
