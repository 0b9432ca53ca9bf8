"""Training throughput of the handwritten U-Net relative to fastai's DynamicUnet, measured side by side.

Both models are built on copies of the same encoder (the one `lesson7 unet` uses for the size), fed the same
batches from the same DataLoaders, with the same loss and optimizer. Timing is interleaved (A, B, A, B, ...)
so that a change in machine load affects both alike; the ratio printed is the median over rounds. Precision is
training's: bfloat16 autocast where `bf16_is_fast` says so (as `BF16Autocast` does), else float32; `--precision`
forces one.

    python bench/unet_throughput.py [--size small|tiny|full] [--rounds 5] [--batches 4] [--precision auto|bf16|fp32]
"""
import argparse, contextlib, statistics, time
import torch
from lessons_lib.core import get_config, bf16_is_fast, use_bf16
from lessons_lib.segdata import seg_path, read_codes, seg_dls
from lessons_lib.train import BF16Autocast, n_params
from lessons_lib.unet import Unet, unet_encoder, unet_settings, dynamic_unet_learner, seg_learner


def time_steps(learn, batches):
    "Seconds for one optimizer step per batch in `batches` (forward, loss, backward, step), in the learner's precision."
    model, opt = learn.model.train(), learn.opt
    bf16 = any(isinstance(cb, BF16Autocast) for cb in learn.cbs)
    t0 = time.perf_counter()
    for xb, yb in batches:
        with torch.autocast(xb.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = learn.loss_func(model(xb).float(), yb)
        loss.backward(); opt.step(); opt.zero_grad()
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', default='small'); p.add_argument('--rounds', type=int, default=5); p.add_argument('--batches', type=int, default=4)
    p.add_argument('--precision', default='auto', choices=['auto', 'bf16', 'fp32'])
    a = p.parse_args(argv)
    cfg = get_config(size=a.size, pretrained='off')
    us = unet_settings(cfg)
    path = seg_path(cfg, us.n_train, us.n_valid, us.scene_size); codes = read_codes(path); void = codes.index('Void') if 'Void' in codes else None
    stage = us.stages[0]
    dls = seg_dls(path, stage.size, stage.bs)
    encoder = unet_encoder(us.encoder, cfg)     # weights do not change the speed
    bf16 = use_bf16(cfg, dls.device) if a.precision == 'auto' else a.precision == 'bf16'
    learners = {'handwritten': seg_learner(dls, Unet(encoder, len(codes)), len(codes), void, amp=bf16),
                'DynamicUnet': dynamic_unet_learner(dls, encoder, len(codes), void, amp=bf16)}
    print(f"precision: {'bfloat16' if any(isinstance(cb, BF16Autocast) for cb in learners['handwritten'].cbs) else 'float32'} "
          f"(bf16_is_fast: {bf16_is_fast(dls.device)}), batch {stage.bs}")
    batches = [b for _, b in zip(range(a.batches), dls.train)]
    for l in learners.values():
        l.create_opt(); time_steps(l, batches[:1])            # warm up: allocator, kernels
    times = {k: [] for k in learners}
    for _ in range(a.rounds):
        for k, l in learners.items(): times[k].append(time_steps(l, batches))
    n_img = sum(len(xb) for xb, _ in batches)
    ips = {k: n_img / statistics.median(v) for k, v in times.items()}
    for k, l in learners.items(): print(f'{k:12s} {n_params(l.model):>10,} params  {ips[k]:7.1f} images/s (median of {a.rounds} rounds)')
    print(f'throughput ratio handwritten / DynamicUnet: {ips["handwritten"] / ips["DynamicUnet"]:.2f}x')


if __name__ == '__main__': main()
