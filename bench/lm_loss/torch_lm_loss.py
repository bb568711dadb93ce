"""The peer of bench/lm_loss: PyTorch's LM head and cross-entropy as a training step computes them (logits =
h @ w^T in the compute dtype, upcast to f32 as torch.autocast does for cross_entropy, mean over positions), value and
both gradients. Prints `torch ms=X` for the median call."""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--positions", type=int, default=1024)
ap.add_argument("--embed", type=int, default=128)
ap.add_argument("--vocab", type=int, default=50257)
ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--warmup", type=int, default=2)
a = ap.parse_args()
dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
g = torch.Generator().manual_seed(0)
h0 = torch.randn(a.positions, a.embed, generator=g).to(dt)
w0 = (torch.randn(a.vocab, a.embed, generator=g) * 0.02).to(dt)
ids = torch.randint(a.vocab, (a.positions,), generator=g)
times = []
for i in range(a.warmup + a.steps):
    h = h0.clone().requires_grad_(True)
    w = w0.clone().requires_grad_(True)
    t0 = time.perf_counter()
    loss = F.cross_entropy((h @ w.t()).float(), ids)
    loss.backward()
    if i >= a.warmup:
        times.append((time.perf_counter() - t0) * 1e3)
print(f"torch {torch.__version__} ms={statistics.median(times):.3f}")
