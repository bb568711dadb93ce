"""The peer of bench/attention: PyTorch's causal self-attention forward + backward on q, k, v cut from one
(batch, position, 3, heads, head_size) projection, as GPT-2 cuts them, in f32. `--impl manual` is nanoGPT's
(q @ k^T * scale, masked_fill, softmax, @ v: what torch_gpt2_bench.py runs); `--impl sdpa` is
F.scaled_dot_product_attention(is_causal=True) (PyTorch 2, which has a fused CPU kernel). Prints `torch ms=X` for the
median call."""
import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--seq", type=int, default=128)
ap.add_argument("--head-size", type=int, default=32)
ap.add_argument("--impl", choices=["manual", "sdpa"], default="manual")
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--warmup", type=int, default=3)
a = ap.parse_args()
B, H, T, D = a.batch, a.heads, a.seq, a.head_size
g = torch.Generator().manual_seed(0)
x0 = torch.randn(B, T, 3, H, D, generator=g)
dout = torch.randn(B, H, T, D, generator=g)
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))


def attend(x):
    q, k, v = x.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, D) each
    if a.impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
    att = att.masked_fill(~causal, float("-inf"))
    return F.softmax(att, dim=-1) @ v


times = []
for i in range(a.warmup + a.steps):
    x = x0.clone().requires_grad_(True)
    t0 = time.perf_counter()
    attend(x).backward(dout)
    if i >= a.warmup:
        times.append((time.perf_counter() - t0) * 1e3)
print(f"torch {torch.__version__} ms={statistics.median(times):.3f}")
