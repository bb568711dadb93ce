#!/usr/bin/env python3
"""torch.optim.AdamW (or Lion) on GPT-2 small's parameter shapes: the PyTorch side of bench/optimizer/run.

    OMP_NUM_THREADS=2 python3 torch_adamw.py [--steps N] [--warmup W] [--grads f32|bf16] [--optimizer adam|lion]

PyTorch has no Lion; --optimizer lion times the usual eager PyTorch Lion (as lucidrains/lion-pytorch writes it:
p.mul_(1 - lr wd); p.add_(sign(b1 m + (1 - b1) g), alpha=-lr); m.mul_(b2).add_(g, alpha=1 - b2)), per tensor
(foreach=False) or with torch._foreach_* ops where PyTorch has them (foreach=True; the sign stays per tensor).

Same setup as bench_optimizer: 148 float32 tensors, 124,439,808 values, Linear weights in a param group with
weight_decay 0.1, the rest with 0. Times `step` (opt.step() alone) and `clip_step` (clip_grad_norm_(max_norm=1.0)
then opt.step()), for foreach=False (the CPU default in torch 1.13) and foreach=True; median of N steps after W.
With --grads bf16 the gradients are rounded to bf16 and stored as float32 (torch needs grads in the parameter's
dtype), so both sides see the same values. Prints `torch foreach=F step_ms=X clip_step_ms=Y` lines.
"""
import argparse
import time

import torch


def gpt2_small():
    V, P, E, L = 50257, 1024, 768, 12
    spec = [("wte.weight", False, (V, E)), ("wpe.weight", False, (P, E))]
    for l in range(L):
        h = f"h.{l}."
        spec += [(h + "ln_1.weight", False, (E,)), (h + "ln_1.bias", False, (E,)),
                 (h + "attn.c_attn.weight", True, (E, 3 * E)), (h + "attn.c_attn.bias", False, (3 * E,)),
                 (h + "attn.c_proj.weight", True, (E, E)), (h + "attn.c_proj.bias", False, (E,)),
                 (h + "ln_2.weight", False, (E,)), (h + "ln_2.bias", False, (E,)),
                 (h + "mlp.c_fc.weight", True, (E, 4 * E)), (h + "mlp.c_fc.bias", False, (4 * E,)),
                 (h + "mlp.c_proj.weight", True, (4 * E, E)), (h + "mlp.c_proj.bias", False, (E,))]
    spec += [("ln_f.weight", False, (E,)), ("ln_f.bias", False, (E,))]
    return spec


class Lion:
    def __init__(self, decay, rest, lr, betas, weight_decay, foreach):
        self.groups = [(decay, weight_decay), (rest, 0.0)]
        self.lr, self.b1, self.b2, self.foreach = lr, betas[0], betas[1], foreach
        self.m = {id(p): torch.zeros_like(p) for ps, _ in self.groups for p in ps}

    @torch.no_grad()
    def step(self):
        for ps, wd in self.groups:
            ms = [self.m[id(p)] for p in ps]
            gs = [p.grad for p in ps]
            if self.foreach:
                if wd:
                    torch._foreach_mul_(ps, 1 - self.lr * wd)
                cs = torch._foreach_mul(ms, self.b1)
                torch._foreach_add_(cs, gs, alpha=1 - self.b1)
                for c in cs:
                    c.sign_()
                torch._foreach_add_(ps, cs, alpha=-self.lr)
                torch._foreach_mul_(ms, self.b2)
                torch._foreach_add_(ms, gs, alpha=1 - self.b2)
            else:
                for p, m, g in zip(ps, ms, gs):
                    if wd:
                        p.mul_(1 - self.lr * wd)
                    p.add_(m.mul(self.b1).add_(g, alpha=1 - self.b1).sign_(), alpha=-self.lr)
                    m.mul_(self.b2).add_(g, alpha=1 - self.b2)


class Sophia:
    """Sophia-H's update as the paper's reference implementation writes it in eager PyTorch (the Hessian estimate's
    EMA every 10th step with ones, as bench_optimizer does; the Hessian-vector product is not timed)."""

    def __init__(self, decay, rest, lr, betas, weight_decay, foreach, rho=0.01, eps=1e-12, interval=10):
        self.groups = [(decay, weight_decay), (rest, 0.0)]
        self.lr, self.b1, self.b2, self.rho, self.eps, self.k = lr, betas[0], betas[1], rho, eps, interval
        self.m = {id(p): torch.zeros_like(p) for ps, _ in self.groups for p in ps}
        self.h = {id(p): torch.zeros_like(p) for ps, _ in self.groups for p in ps}
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        bc = 1 - self.b1 ** self.t
        for ps, wd in self.groups:
            for p in ps:
                m, h, g = self.m[id(p)], self.h[id(p)], p.grad
                m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                if wd:
                    p.mul_(1 - self.lr * wd)
                ratio = (m / bc).div_(torch.clamp(h * self.rho, min=self.eps)).clamp_(-1, 1)
                p.add_(ratio, alpha=-self.lr)
                if self.t % self.k == 0:
                    h.mul_(self.b2).add_(torch.ones_like(h), alpha=1 - self.b2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--grads", default="f32")
    ap.add_argument("--optimizer", default="adam", choices=["adam", "lion", "sophia-h"])
    args = ap.parse_args()
    torch.manual_seed(0)
    spec = gpt2_small()
    params = [torch.nn.Parameter(torch.randn(shape) * 0.02) for _, _, shape in spec]
    grads = [torch.randn(shape) * 1e-3 for _, _, shape in spec]
    if args.grads == "bf16":
        grads = [g.bfloat16().float() for g in grads]
    numel = sum(p.numel() for p in params)
    print(f"torch {torch.__version__}: {len(params)} tensors, {numel} parameters, {torch.get_num_threads()} threads",
          flush=True)
    for foreach in (False, True):
        result = []
        for clip in (False, True):
            decay = [p for p, (_, d, _) in zip(params, spec) if d]
            rest = [p for p, (_, d, _) in zip(params, spec) if not d]
            if args.optimizer == "sophia-h":
                opt = Sophia(decay, rest, lr=6e-4, betas=(0.96, 0.99), weight_decay=0.1, foreach=foreach)
            elif args.optimizer == "lion":
                opt = Lion(decay, rest, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=foreach)
            else:
                opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                         {"params": rest, "weight_decay": 0.0}],
                                        lr=6e-4, betas=(0.9, 0.95), eps=1e-8, foreach=foreach)
            times = []
            for s in range(args.warmup + args.steps):
                for p, g in zip(params, grads):
                    p.grad = g.clone() if clip else g  # clipping scales grads in place; keep the inputs intact
                t0 = time.perf_counter()
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                t1 = time.perf_counter()
                if s >= args.warmup:
                    times.append((t1 - t0) * 1e3)
            times.sort()
            result.append(times[len(times) // 2])
            del opt
        print(f"torch optimizer={args.optimizer} foreach={foreach} grads={args.grads} step_ms={result[0]:.1f} clip_step_ms={result[1]:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
