"""How much of this CPU's float32 peak a training step of lessons 2 and 3 reaches, and where the rest goes.

The peak is a large float32 matmul timed in the same process (the best any kernel here does). A training step's
useful work is counted with torch's `FlopCounterMode` (forward and backward of the model, at the lesson's `small`
batch and image size), and divided by its median time. For each step the bench then looks at where the rest goes (why, where the fraction is
below a third), each measured side by side in this run:
- layout: the same step with model and batch in `channels_last`;
- threads: the step on 1 thread against all of them (how much a second core buys);
- small convolutions: torch's profiler splits the step's time into convolutions / matmuls (where the FLOPs are)
  and everything else (batch/weight norm, activations, additions, the optimizer: memory-bound, next to no FLOPs),
  and gives the convolutions' own FLOP rate.

    python bench/cpu_peak.py [--steps 8] [--lessons unet superres] [--bf16 off]
"""
import argparse, os, statistics, time
from lessons_lib.hardware import configure_threads, cpu_model
configure_threads()          # as the lessons run (before torch starts OpenMP); set GOMP_SPINCOUNT or OMP_WAIT_POLICY to compare
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(n=2048, reps=6) -> float:
    "float32 FLOP/s of an `n` x `n` matmul, the best of `reps`."
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0


def unet_step():
    "Lesson 2 at small: the handwritten U-Net on 64-px digit scenes, batch 16, 11 classes, per-pixel cross-entropy."
    from lessons_lib.core import Config
    from lessons_lib.unet import build_unet, unet_settings
    cfg = Config(pretrained='off'); st = unet_settings(cfg)
    model = build_unet(cfg, 11).train()
    bs, size = st.stages[-1].bs, st.scene_size
    x, y = torch.rand(bs, 3, size, size), torch.randint(0, 11, (bs, size, size))
    return model, x, lambda out: nn.functional.cross_entropy(out, y), f'U-Net, batch {bs} x {size} px'


def superres_step():
    "Lesson 3 at small: the MSE stage's generator, batch 8, 128-px crops."
    from lessons_lib.core import Config
    from lessons_lib.superres import superres_settings, superres_generator
    cfg = Config(pretrained='off'); st = superres_settings(cfg); stage = st.mse_stages[0]
    model = superres_generator(cfg, st.encoder, st.widths).train()
    x, y = torch.rand(stage.bs, 3, stage.size, stage.size), torch.rand(stage.bs, 3, stage.size, stage.size)
    return model, x, lambda out: nn.functional.mse_loss(out, y), f'generator, batch {stage.bs} x {stage.size} px'


LESSONS = dict(unet=('lesson 2', unet_step), superres=('lesson 3', superres_step))


def make_step(model, x, loss_fn, bf16):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def step():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): loss = loss_fn(model(x))
        opt.zero_grad(); loss.backward(); opt.step()
    return step


def median_time(step, steps) -> float:
    for _ in range(2): step()
    return statistics.median(_timed(step) for _ in range(steps))


def step_flops(model, x, loss_fn) -> int:
    with FlopCounterMode(display=False) as fc:
        loss_fn(model(x)).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


HEAVY = ('conv', 'mm', 'matmul', 'linear')    # 'mm' also names addmm, bmm


def time_split(step) -> tuple:
    "(share of the step's CPU time in convolutions and matmuls, their FLOP rate, the 4 costliest other ops)."
    from torch.profiler import profile, ProfilerActivity
    step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof: step()
    heavy_t = other_t = heavy_flops = 0.
    others = {}
    for e in prof.key_averages():
        name, t = e.key, e.self_cpu_time_total
        if any(h in name.split('::')[-1] for h in HEAVY): heavy_t += t; heavy_flops += e.flops or 0
        else: other_t += t; others[name] = others.get(name, 0) + t
    top = sorted(others.items(), key=lambda kv: -kv[1])[:4]
    total = heavy_t + other_t
    return heavy_t / total, heavy_flops / (heavy_t * 1e-6) if heavy_t else 0., [(k, v / total) for k, v in top]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=8)
    p.add_argument('--lessons', nargs='+', default=list(LESSONS), choices=list(LESSONS))
    p.add_argument('--bf16', default='off', choices=['on', 'off'], help='autocast the step to bfloat16 (the peak stays float32)')
    a = p.parse_args(argv)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    peak = matmul_peak()
    print(f'{cpu_model()}, {os.cpu_count()} CPUs, {threads} threads, OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "(unset)")}, '
          f'GOMP_SPINCOUNT={os.environ.get("GOMP_SPINCOUNT", "(unset)")}')
    print(f'float32 peak (2048x2048 matmul): {peak / 1e9:.1f} GFLOP/s')
    for name in a.lessons:
        label, build = LESSONS[name]
        model, x, loss_fn, what = build()
        flops = step_flops(model, x, loss_fn)
        step = make_step(model, x, loss_fn, a.bf16 == 'on')
        t = median_time(step, a.steps)
        frac = flops / t / peak
        print(f'{label} ({what}): {flops / 1e9:.2f} GFLOP a step (forward + backward), median {t * 1e3:.0f} ms '
              f'-> {flops / t / 1e9:.1f} GFLOP/s = {frac:.2f} of peak')
        share, heavy_rate, top = time_split(step)
        model_cl = model.to(memory_format=torch.channels_last)
        t_cl = median_time(make_step(model_cl, x.contiguous(memory_format=torch.channels_last), loss_fn, a.bf16 == 'on'), a.steps)
        model.to(memory_format=torch.contiguous_format)
        torch.set_num_threads(1)
        t_1 = median_time(step, a.steps)
        torch.set_num_threads(threads)
        print(f'  {"below a third; why, measured" if frac < 1 / 3 else "at least a third; where the rest goes, measured"}:')
        print(f'  - small convolutions: convolutions and matmuls take {share:.0%} of the step\'s CPU time and run at '
              f'{heavy_rate / 1e9:.1f} GFLOP/s ({heavy_rate / peak:.2f} of peak); the other {1 - share:.0%} does next to no FLOPs: '
              + ', '.join(f'{k} {v:.0%}' for k, v in top))
        print(f'  - layout: channels_last {t_cl * 1e3:.0f} ms vs {t * 1e3:.0f} ms ({t / t_cl:.2f}x)')
        print(f'  - threads: 1 thread {t_1 * 1e3:.0f} ms vs {threads} threads {t * 1e3:.0f} ms ({t_1 / t:.2f}x from {threads}x the cores)')


if __name__ == '__main__': main()
