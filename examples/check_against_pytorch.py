#!/usr/bin/env python3
"""`wgpu-policy-loss eval --positions shifted` against plain PyTorch, on a small causal LM.

A tiny transformer with random weights (fixed seed, nothing downloaded) samples responses
after random prompts; its float32 logits [B, S, V] and the input ids [B, S] go to `eval`
as they are, with `--positions shifted` doing the causal shift (logits row s − 1 scores
id s). Two losses are compared with PyTorch's autograd:

  (a) the seed's REINFORCE, −mean_t(log π(y_t))·R averaged over sequences
      (`--mode reinforce --loss-agg-mode seq-mean-token-mean`, advantages = R);
  (b) GRPO's clipped surrogate (`--mode ppo_clip`, token-mean), with old log-probs a
      little off the current ones so that some ratios clip.

For each: the loss, the per-token log-probs and the gradient with respect to the logits,
each difference beside its tolerance; the exit status is 1 if any is past it.

    pip install -r examples/requirements.txt
    cargo build --release
    python3 examples/check_against_pytorch.py [--bin PATH] [--adapter NAME]
"""

import argparse
import json
import math
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent

B, S, PROMPT, V, DIM, HEADS, LAYERS = 4, 32, 8, 1000, 64, 4, 2
# f32's unit roundoff: every tolerance below is a count of these.
U = 2.0**-24


# --- safetensors: the package where installed, else the few dtypes this script uses -----

try:
    from safetensors.torch import load_file, save_file
except ImportError:
    _DTYPES = {
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
    }
    _TORCH = {v: k for k, v in _DTYPES.items()}

    def save_file(tensors, path):
        """The format: an 8-byte little-endian header length, a JSON header of dtype,
        shape and data_offsets, then the raw little-endian bytes (x86 and ARM hosts are
        little-endian)."""
        header, blobs, offset = {}, [], 0
        for name, t in tensors.items():
            raw = bytes(t.detach().contiguous().view(torch.uint8).flatten().tolist())
            header[name] = {
                "dtype": _DTYPES[t.dtype],
                "shape": list(t.shape),
                "data_offsets": [offset, offset + len(raw)],
            }
            blobs.append(raw)
            offset += len(raw)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))

    def load_file(path):
        data = Path(path).read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        out = {}
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            begin, end = meta["data_offsets"]
            raw = bytearray(data[8 + n + begin : 8 + n + end])
            dtype = _TORCH[meta["dtype"]]
            t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            out[name] = t.reshape(meta["shape"])
        return out


# --- the model -----------------------------------------------------------------------------


class Block(torch.nn.Module):
    """Pre-norm causal self-attention and an MLP."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim)
        )

    def forward(self, x):
        b, s, d = x.shape
        qkv = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp(self.ln2(x))


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.pos = torch.nn.Embedding(V, DIM), torch.nn.Embedding(S, DIM)
        self.blocks = torch.nn.ModuleList(Block(DIM, HEADS) for _ in range(LAYERS))
        self.norm, self.head = torch.nn.LayerNorm(DIM), torch.nn.Linear(DIM, V, bias=False)
        with torch.no_grad():
            # a trained LM's logits spread over several units, not a default init's few tenths
            self.head.weight.mul_(6.0)

    def forward(self, ids):
        x = self.embed(ids) + self.pos(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def rollout():
    """Prompts, sampled responses of uneven lengths (padded with id 0), the response
    mask [B, S] of the predicted tokens, and the float32 logits [B, S, V]."""
    torch.manual_seed(0)
    model = TinyLM().eval()
    ids = torch.randint(0, V, (B, PROMPT))
    with torch.no_grad():
        for _ in range(S - PROMPT):
            nxt = torch.multinomial(torch.softmax(model(ids)[:, -1], -1), 1)
            ids = torch.cat([ids, nxt], 1)
        lengths = torch.tensor([S - PROMPT, S - PROMPT - 5, S - PROMPT - 2, S - PROMPT - 9])
        pos = torch.arange(S)
        end = PROMPT + lengths[:, None]
        mask = ((pos >= PROMPT) & (pos < end)).float()
        ids = torch.where(pos < end, ids, torch.zeros_like(ids))
        logits = model(ids).float().contiguous()
    return ids, mask, logits


# --- eval ----------------------------------------------------------------------------------


def eval_command(given):
    if given:
        # eval runs from the repository root: a relative path is the caller's
        return [str(Path(given).resolve()) if Path(given).exists() else given]
    built = REPO / "target" / "release" / "wgpu-policy-loss"
    if built.exists():
        return [str(built)]
    return ["cargo", "run", "--release", "--quiet", "--"]


def run_eval(cmd, tensors, flags, adapter, tmp):
    src, dst = Path(tmp) / "in.safetensors", Path(tmp) / "out.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(src))
    args = cmd + ["eval", "--input", str(src), "--output", str(dst), "--positions", "shifted"]
    args += flags + (["--adapter", adapter] if adapter else [])
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"eval failed ({done.returncode}): {' '.join(args)}\n{done.stderr}")
    return load_file(str(dst))


# --- PyTorch's side ------------------------------------------------------------------------


def token_logprobs(logits, ids):
    """log π(y_s) of each predicted token s ≥ 1, from logits row s − 1: [B, S − 1]."""
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]


def seed_loss(logits, ids, mask, reward):
    """The loss, the log-probs, and Σ_t |w_t·l_t| (the size of what the loss sums)."""
    logp, m = token_logprobs(logits, ids), mask[:, 1:]
    w = m / m.sum(-1, keepdim=True) / B
    per_token = -logp * reward[:, None]
    return (per_token * w).sum(), logp, (per_token.abs() * w).sum().item()


def ppo_clip_loss(logits, ids, mask, adv, old, eps=0.2):
    logp, m = token_logprobs(logits, ids), mask[:, 1:]
    ratio = torch.exp(torch.clamp(logp - old[:, 1:], -20.0, 20.0))
    a = adv[:, None]
    per_token = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - eps, 1 + eps))
    w = m / m.sum()
    return (per_token * w).sum(), logp, (per_token.abs() * w).sum().item()


def reference(loss_fn, logits, *args):
    x = logits.clone().requires_grad_()
    loss, logp, size = loss_fn(x, *args)
    loss.backward()
    # eval's per-token tensors are [B, S] with position 0 (predicted by nothing) 0
    logp = torch.cat([torch.zeros(B, 1), logp.detach()], 1)
    return loss.detach(), logp, x.grad, size


# --- the comparison ------------------------------------------------------------------------


def tolerances(logits, mask, ref, weight):
    """What f32 allows, from the quantities' sizes (both sides round in f32, so each
    bound counts two implementations):

    - a log-prob is z_y − lse with lse = M + log Σ_v e^{z_v − M}: summing V terms in a
      tree or in blocks rounds about log2(V) times, each a relative u of the sum, and the
      exponentials, the log and the subtraction add a few u of the operands' size
      max(1, |lse|, max|z|). So |Δlogp| ≤ 2·(log2 V + 4)·u·scale: for V = 1000 and
      logits of a few units, a few 1e-6.
    - the loss is a weighted sum of per-token terms whose log-probs carry that error
      (`weight` bounds Σ_t |∂L/∂logp_t|, the first-order sensitivity), plus summing N
      terms: (log2 N + 4)·u·Σ_t |w_t·l_t|.
    - a gradient entry is G·(1[v = y] − p_v) with p_v = e^{z_v − lse}: p_v inherits lse's
      error relative to itself, and G (a product of a few rounded factors) a few u, so
      each entry's error is relative to the entry: max|grad|·(tol_logp + 8u).
    """
    _, _, grad, size = ref
    lse = torch.logsumexp(logits[:, :-1], -1)
    scale = max(1.0, lse.abs().max().item(), logits[:, :-1].abs().max().item())
    tol_logp = 2 * (math.log2(V) + 4) * U * scale
    n = mask[:, 1:].sum().item()
    tol_loss = weight * tol_logp + (math.log2(n) + 4) * U * size
    tol_grad = grad.abs().max().item() * (tol_logp + 8 * U)
    return tol_logp, tol_loss, tol_grad


def compare(title, ours, ref, mask, logits, weight):
    loss, logp, grad, _ = ref
    tol_logp, tol_loss, tol_grad = tolerances(logits, mask, ref, weight)
    ok = True
    print(title)

    def line(name, diff, rel, tol, note=""):
        nonlocal ok
        good = diff <= tol
        ok &= good
        verdict = "ok" if good else "PAST TOLERANCE"
        print(f"  {name:<9} max |Δ| {diff:.3e}  ({rel})  tol {tol:.3e}  {verdict}{note}")

    got = ours["loss"].item()
    d = abs(got - loss.item())
    line("loss", d, f"rel {d / max(abs(loss.item()), 1e-30):.2e}", tol_loss,
         f"   eval {got:.9f}  torch {loss.item():.9f}")
    read = torch.cat([torch.zeros(B, 1), mask[:, 1:]], 1) > 0
    dl = (ours["logprobs"] - logp).abs()[read]
    rel = (dl / logp.abs()[read].clamp_min(1e-30)).max().item()
    zero0 = bool((ours["logprobs"][:, 0] == 0).all())
    line("logprobs", dl.max().item(), f"rel {rel:.2e}, {int(read.sum())} tokens", tol_logp,
         "" if zero0 else "   position 0 is not 0")
    ok &= zero0
    g = ours["grad_logits"].float()
    dg = (g - grad).abs().max().item()
    last0 = bool((g[:, -1] == 0).all())
    line("grad", dg, f"rel to max|grad| {dg / grad.abs().max().item():.2e}", tol_grad,
         "" if last0 else "   the last row is not 0")
    return ok and last0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--bin", help="the wgpu-policy-loss binary (default: target/release/, else cargo run)"
    )
    p.add_argument("--adapter", help="eval's --adapter")
    args = p.parse_args()
    cmd = eval_command(args.bin)
    ids, mask, logits = rollout()
    print(
        f"tiny causal LM: B={B} S={S} (prompt {PROMPT}) V={V}, {int(mask.sum())} response "
        f"tokens, logits in [{logits.min():.2f}, {logits.max():.2f}]; eval: {' '.join(cmd)}"
    )
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        # (a) the seed: rewards +1.0 for a right answer, −0.1 for a wrong one
        reward = torch.tensor([1.0, -0.1, 1.0, -0.1])
        inputs = {"logits": logits, "targets": ids, "mask": mask, "advantages": reward}
        flags = ["--mode", "reinforce", "--loss-agg-mode", "seq-mean-token-mean"]
        ours = run_eval(cmd, inputs, flags, args.adapter, tmp)
        ref = reference(seed_loss, logits, ids, mask, reward)
        weight = reward.abs().max().item()
        title = "(a) the seed's REINFORCE, seq-mean-token-mean"
        ok &= compare(title, ours, ref, mask, logits, weight)

        # (b) GRPO: group-normalised rewards, old log-probs up to ±0.3 off (kept 1e-3 away
        # from the clip edges, where the two sides' rounding could choose differently)
        r = torch.tensor([1.0, 0.0, 0.0, 1.0])
        adv = (r - r.mean()) / (r.std() + 1e-6)
        g = torch.Generator().manual_seed(1)
        noise = (torch.rand(B, S, generator=g) * 2 - 1) * 0.3
        for edge in (math.log(0.8), math.log(1.2)):
            near = (-noise - edge).abs() < 1e-3
            noise = torch.where(near, noise + 3e-3, noise)
        cur = torch.cat([torch.zeros(B, 1), token_logprobs(logits, ids)], 1)
        old = cur + noise
        inputs = {
            "logits": logits,
            "targets": ids,
            "mask": mask,
            "advantages": adv,
            "old_logprobs": old,
        }
        ours = run_eval(cmd, inputs, ["--mode", "ppo_clip"], args.adapter, tmp)
        ref = reference(ppo_clip_loss, logits, ids, mask, adv, old)
        ratio = torch.exp(cur - old)[:, 1:][mask[:, 1:] > 0]
        clipped = ((ratio < 0.8) | (ratio > 1.2)).float().mean().item()
        weight = adv.abs().max().item() * ratio.max().item()
        title = f"(b) GRPO's ppo_clip, token-mean ({clipped:.0%} of the ratios outside [0.8, 1.2])"
        ok &= compare(title, ours, ref, mask, logits, weight)
    print("all within tolerance" if ok else "FAILED: a difference is past its tolerance")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
