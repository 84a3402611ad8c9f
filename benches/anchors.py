#!/usr/bin/env python3
"""Anchors beside `wgpu-policy-loss bench`: the same loss in PyTorch, timed on whatever
device PyTorch has (cuda, mps, cpu), at the bench's shapes, counting bytes as the bench
does (two reads and one write of the logits, T x V in their dtype), printed as JSON.

    python3 benches/anchors.py [--device cuda|mps|cpu] [--shape 2048x32000:f32 ...]
                               [--large] [--threads N] [--samples 20] [--impl eager ...]

Implementations (each forward + backward of REINFORCE with token-mean, per-token
advantages, all tokens masked in, as the bench's "fused" and "unfused" compute):
  eager    the seed's pattern: log_softmax(x.float()) -> gather -> masked mean -> * -A
           -> backward (PyTorch materialises [T, V] f32 intermediates)
  compile  torch.compile of the same function (where the device and a compiler allow)
  liger    Liger-Kernel's LigerCrossEntropyLoss forward + backward, gradient written into
           its input, timed minus a clone of the input; computes no entropy and no
           policy-loss weights (the floor to match); only where liger_kernel imports
With --head (the fused linear head, `bench --head`'s shapes T x H x V, default
4096x896x151936, 2048x2048x32000, 16384x896x151936 bf16): forward + backward of the same
loss from hidden states h [T, H] and an lm-head weight W [V, H], gradients to both:
  head_eager    F.linear(h, W).float() -> the seed's loss -> backward ([T, V] logits and
                their gradient materialised)
  head_compile  torch.compile of the same function
  head_liger    Liger-Kernel's LigerFusedLinearCrossEntropyLoss(W, h, y) (chunked;
                plain cross-entropy, the floor to match)
with GFLOP/s counting the three products (6·T·H·V) and, on cuda, the peak memory the
step allocated beyond its inputs.
Each row: median ms of `--samples` timed runs after warm-up (CUDA events on cuda,
perf_counter around a synchronised run elsewhere), and GB/s with the bench's counting.
A shape or implementation that cannot run is a row with "skipped" and the reason.
"""

import argparse
import json
import statistics
import sys
import time

import torch

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_SHAPES = [(256, 32000), (256, 151936), (2048, 32000)]


def parse_shape(s):
    dims, _, dtype = s.partition(":")
    rows, _, vocab = dims.partition("x")
    dtype = dtype or "f32"
    if dtype not in DTYPES or not rows.isdigit() or not vocab.isdigit():
        raise argparse.ArgumentTypeError(f"`{s}` is not ROWSxVOCAB[:f32|f16|bf16]")
    return int(rows), int(vocab), dtype


def inputs(rows, vocab, dtype, device):
    # the bench's values: moderate logits, targets (r * 7919) % V, advantages -0.5 on
    # every third row and 1.0 elsewhere, every row masked in
    g = torch.Generator(device="cpu").manual_seed(0)
    x = ((torch.rand(rows, vocab, generator=g) - 0.5) * 8.0).to(DTYPES[dtype]).to(device)
    r = torch.arange(rows)
    y = ((r * 7919) % vocab).to(device)
    adv = torch.where(r % 3 == 0, -0.5, 1.0).to(device)
    mask = torch.ones(rows, device=device)
    return x, y, adv, mask


def seed_loss(x, y, adv, mask):
    logp = torch.log_softmax(x.float(), dim=-1).gather(-1, y[:, None])[:, 0]
    return -(logp * adv * mask).sum() / mask.sum()


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def timed(fn, device, samples, subtract=None):
    """Median ms of `fn` over `samples` runs after warm-up; minus `subtract`'s."""
    for _ in range(3):
        fn()
    sync(device)
    times = []
    for _ in range(samples):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(times)
    if subtract is not None:
        ms -= timed(subtract, device, samples)
    return ms


def run_eager(x, y, adv, mask):
    x = x.detach().requires_grad_()

    def step():
        x.grad = None
        seed_loss(x, y, adv, mask).backward()

    return step, None


def run_compile(x, y, adv, mask):
    fn = torch.compile(seed_loss)
    x = x.detach().requires_grad_()

    def step():
        x.grad = None
        fn(x, y, adv, mask).backward()

    return step, None


def run_liger(x, y, adv, mask):
    from liger_kernel.transformers import LigerCrossEntropyLoss

    ce = LigerCrossEntropyLoss()
    state = {}

    def clone():
        state["x"] = x.detach().clone().requires_grad_()

    def step():
        clone()
        ce(state["x"], y).backward()

    return step, clone


IMPLS = {"eager": run_eager, "compile": run_compile, "liger": run_liger}


def parse_head_shape(s):
    dims, _, dtype = s.partition(":")
    parts = dims.split("x")
    dtype = dtype or "bf16"
    if dtype not in DTYPES or len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"`{s}` is not ROWSxHIDDENxVOCAB[:f32|f16|bf16]")
    return int(parts[0]), int(parts[1]), int(parts[2]), dtype


def head_inputs(rows, hidden, vocab, dtype, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    h = ((torch.rand(rows, hidden, generator=g) - 0.5) * 0.2).to(DTYPES[dtype]).to(device)
    w = ((torch.rand(vocab, hidden, generator=g) - 0.5) * 0.2).to(DTYPES[dtype]).to(device)
    r = torch.arange(rows)
    y = ((r * 7919) % vocab).to(device)
    adv = torch.where(r % 3 == 0, -0.5, 1.0).to(device)
    mask = torch.ones(rows, device=device)
    return h, w, y, adv, mask


def head_loss(h, w, y, adv, mask):
    return seed_loss(torch.nn.functional.linear(h, w), y, adv, mask)


def head_step(fn, h, w):
    h, w = h.detach().requires_grad_(), w.detach().requires_grad_()

    def step():
        h.grad, w.grad = None, None
        fn(h, w).backward()

    return step


def run_head_eager(h, w, y, adv, mask):
    return head_step(lambda h, w: head_loss(h, w, y, adv, mask), h, w)


def run_head_compile(h, w, y, adv, mask):
    fn = torch.compile(head_loss)
    return head_step(lambda h, w: fn(h, w, y, adv, mask), h, w)


def run_head_liger(h, w, y, adv, mask):
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    ce = LigerFusedLinearCrossEntropyLoss()
    return head_step(lambda h, w: ce(w, h, y), h, w)


HEAD_IMPLS = {"head_eager": run_head_eager, "head_compile": run_head_compile,
              "head_liger": run_head_liger}
DEFAULT_HEAD_SHAPES = [(4096, 896, 151936, "bf16"), (2048, 2048, 32000, "bf16"),
                       (16384, 896, 151936, "bf16")]


def run_heads(args, device, name):
    out = []
    for rows, hidden, vocab, dtype in args.head_shape or DEFAULT_HEAD_SHAPES:
        for impl in args.impl or list(HEAD_IMPLS):
            row = {"impl": impl, "device": name, "torch": torch.__version__, "rows": rows,
                   "hidden": hidden, "vocab": vocab, "dtype": dtype}
            try:
                h, w, y, adv, mask = head_inputs(rows, hidden, vocab, dtype, device)
                step = HEAD_IMPLS[impl](h, w, y, adv, mask)
                if device == "cuda":
                    step()
                    torch.cuda.synchronize()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    step()
                    torch.cuda.synchronize()
                    row["extra_bytes"] = torch.cuda.max_memory_allocated() - base
                ms = timed(step, device, args.samples)
                row.update(ms=ms, gflops=6 * rows * hidden * vocab / (ms * 1e6))
            except Exception as e:  # a row that says why, never a dropped shape
                row["skipped"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            out.append(row)
            print(f"{impl:12} {rows}x{hidden}x{vocab} {dtype}: "
                  + (f"{row['ms']:.3f} ms" if "ms" in row else row["skipped"]), file=sys.stderr)
            if device == "cuda":
                torch.cuda.empty_cache()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda | mps | cpu (default: the best there is)")
    p.add_argument("--shape", action="append", type=parse_shape, default=[],
                   help="ROWSxVOCAB[:DTYPE], repeatable (default: the bench's shapes)")
    p.add_argument("--large", action="store_true", help="add 16384x151936 bf16")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--impl", action="append", choices=list(IMPLS) + list(HEAD_IMPLS),
                   default=[], help="implementations to run (default: all)")
    p.add_argument("--head", action="store_true",
                   help="the fused linear head's anchors instead (head_* implementations)")
    p.add_argument("--head-shape", action="append", type=parse_head_shape, default=[],
                   help="ROWSxHIDDENxVOCAB[:DTYPE], repeatable (with --head)")
    args = p.parse_args()

    device = args.device or (
        "cuda" if torch.cuda.is_available()
        else "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
        else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shape or [(r, v, d) for r, v in DEFAULT_SHAPES for d in ("f32", "bf16")]
    if args.large:
        shapes.append((16384, 151936, "bf16"))
    name = torch.cuda.get_device_name() if device == "cuda" else device
    if args.head:
        print(json.dumps(run_heads(args, device, name), indent=2))
        return
    impls = args.impl or list(IMPLS)
    rows_out = []
    for rows, vocab, dtype in shapes:
        elem = torch.finfo(DTYPES[dtype]).bits // 8
        for impl in impls:
            row = {"impl": impl, "device": name, "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "rows": rows, "vocab": vocab,
                   "dtype": dtype}
            try:
                x, y, adv, mask = inputs(rows, vocab, dtype, device)
                step, subtract = IMPLS[impl](x, y, adv, mask)
                ms = timed(step, device, args.samples, subtract)
                row.update(ms=ms, gbs=3 * rows * vocab * elem / (ms * 1e6))
            except Exception as e:  # a row that says why, never a dropped shape
                row["skipped"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            rows_out.append(row)
            print(f"{impl:8} {rows}x{vocab} {dtype}: "
                  + (f"{row['ms']:.3f} ms" if "ms" in row else row["skipped"]), file=sys.stderr)
            if device == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps(rows_out, indent=2))


if __name__ == "__main__":
    main()
