"""A training step alone and beside a competing busy process, for OpenMP's thread count and wait policy, side by side.

torch's CPU kernels run on OpenMP threads that by default *spin* while they wait for work. Alone on the machine that
is fastest; with anything else running (a second notebook, a browser, a test), spinning threads steal the cores the
working ones need, and a step can take several times longer. This measures lesson 3's MSE training step (the
`small` generator, batch 8, 128 px, in training's precision) for each setting, in a fresh process (OpenMP reads its
settings once, when torch loads), alone and beside a process that keeps one core busy, and prints the ratios:
`default` is torch's own (threads spin while they wait), `ours` what `lessons_lib.hardware.configure_threads` sets
(a short spin, then sleep), `passive` never spins, `one` is a single thread.

    python bench/cpu_threads.py [--steps 12] [--settings default passive one]
"""
import argparse, json, os, statistics, subprocess, sys, time

from lessons_lib.hardware import THREAD_DEFAULTS, USER_THREAD_KEYS, cpu_model

# torch's defaults (before), the lessons' (after: `lessons_lib.hardware.configure_threads`), and two a user may choose
SETTINGS = {'default': {}, 'ours': THREAD_DEFAULTS, 'passive': {'OMP_WAIT_POLICY': 'PASSIVE'}, 'one': {'OMP_NUM_THREADS': '1'}}

STEP = r'''
import json, statistics, sys, time, torch
from torch import nn
from lessons_lib.core import Config, use_bf16
from lessons_lib.superres import superres_settings, superres_generator
cfg = Config(pretrained='off', bf16=sys.argv[2]); st = superres_settings(cfg); stage = st.mse_stages[0]
torch.manual_seed(0)
gen = superres_generator(cfg, st.encoder, st.widths).train()
opt = torch.optim.AdamW(gen.parameters(), lr=1e-4)
x, y = torch.rand(stage.bs, 3, stage.size, stage.size), torch.rand(stage.bs, 3, stage.size, stage.size)
bf16, times = use_bf16(cfg, 'cpu'), []
for i in range(int(sys.argv[1]) + 2):
    t0 = time.perf_counter()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16): loss = nn.functional.mse_loss(gen(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    if i >= 2: times.append(time.perf_counter() - t0)
print(json.dumps(dict(median=statistics.median(times), threads=torch.get_num_threads(), bf16=bf16)))
'''

BUSY = 'import numpy as np\na = np.random.rand(400, 400)\nwhile True: a = a @ a; a /= a.max()'


def step_time(env, steps, bf16):
    r = subprocess.run([sys.executable, '-c', STEP, str(steps), bf16], capture_output=True, text=True,
                       env={**{k: v for k, v in os.environ.items() if k not in USER_THREAD_KEYS}, **env})
    if r.returncode: raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=12)
    p.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument('--bf16', default='auto', choices=['auto', 'on', 'off'])
    a = p.parse_args(argv)
    cpu = cpu_model()
    print(f'{cpu}, {os.cpu_count()} CPUs, bf16={a.bf16}; lesson 3 MSE step, batch 8 x 128 px, median of {a.steps} steps')
    res = {}
    for name in a.settings:
        alone = step_time(SETTINGS[name], a.steps, a.bf16)
        busy = subprocess.Popen([sys.executable, '-c', BUSY], env={**os.environ, 'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1'})
        try:
            time.sleep(1); loaded = step_time(SETTINGS[name], a.steps, a.bf16)
        finally: busy.kill(); busy.wait()
        res[name] = (alone['median'], loaded['median'])
        print(f"  {name:8s} {str(SETTINGS[name] or 'torch defaults'):38s} threads {alone['threads']}: alone {alone['median']:.3f} s, "
              f"beside a busy process {loaded['median']:.3f} s ({loaded['median'] / alone['median']:.2f}x)")
    if 'default' in res:
        for name, (alone, loaded) in res.items():
            if name != 'default':
                print(f"  {name} / default: alone {alone / res['default'][0]:.2f}x, beside a busy process {loaded / res['default'][1]:.2f}x")


if __name__ == '__main__': main()
