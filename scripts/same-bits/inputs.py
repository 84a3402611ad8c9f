# Inputs for scripts/same-bits.sh: a [4, 6, 1003] batch in f32, bf16 and f16 logits,
# and a head batch (bf16 hidden [4, 6, 40], lm_head [1003, 40]), with old, ref and
# sampler log-probs; seeded, so every run writes the same files.
import json, struct, numpy as np, sys
def write(path, tensors):
    header = {}; off = 0; blobs = []
    for name, (dt, arr) in tensors.items():
        b = arr.tobytes(); header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(header).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
rng = np.random.default_rng(5)
B, S, V, H = 4, 6, 1003, 40
def bf16(x):
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7fff + ((u >> 16) & 1)) >> 16).astype(np.uint16)
x = (rng.standard_normal((B, S, V)) * 2).astype(np.float32)
y = rng.integers(0, V, (B, S)).astype(np.int64)
m = (rng.random((B, S)) > 0.2).astype(np.float32)
a = rng.standard_normal(B).astype(np.float32)
old = (rng.standard_normal((B, S)) * 0.3 - 6.5).astype(np.float32)
ref = old + 0.1
base = {"targets": ("I64", y), "mask": ("F32", m), "advantages": ("F32", a), "old_logprobs": ("F32", old), "ref_logprobs": ("F32", ref), "rollout_logprobs": ("F32", old - 0.2)}
write("f32.safetensors", {"logits": ("F32", x), **base})
write("bf16.safetensors", {"logits": ("BF16", bf16(x)), **base})
write("f16.safetensors", {"logits": ("F16", x.astype(np.float16)), **base})
h = (rng.standard_normal((B, S, H)) * 0.5).astype(np.float32)
w = (rng.standard_normal((V, H)) * 0.3).astype(np.float32)
write("head.safetensors", {"hidden": ("BF16", bf16(h)), "lm_head": ("BF16", bf16(w)), **base})
