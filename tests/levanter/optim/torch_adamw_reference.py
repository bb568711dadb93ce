#!/usr/bin/env python3
"""Reference for tests/levanter/optim/test_adamw.cpp: runs torch.optim.AdamW on the inputs the test wrote.

    python3 torch_adamw_reference.py DIR

DIR/spec.json: {"shapes": [[...], ...], "decay": [bool, ...], "lrs": [lr per step], "beta1", "beta2", "eps",
"weight_decay", "max_grad_norm" (null: no clipping)}. DIR/params.bin: the initial parameters, float32, concatenated
in order. DIR/grads.bin: for each step, every gradient, float32, concatenated. Writes DIR/out.bin (final parameters,
same layout) and DIR/norms.json (the pre-clip gradient norm of each step).

Clipping is optax.clip_by_global_norm, as Levanter uses it: norm = sqrt(sum of squares) (float64 here), and the
gradients are multiplied by max_norm / norm when norm >= max_norm. (torch.nn.utils.clip_grad_norm_ would divide by
norm + 1e-6.) Parameters that do not decay go in a param group with weight_decay 0.
"""
import json
import math
import os
import sys

import numpy as np
import torch


def main(d):
    spec = json.load(open(os.path.join(d, "spec.json")))
    shapes = [tuple(s) for s in spec["shapes"]]
    sizes = [int(np.prod(s)) if s else 1 for s in shapes]
    flat = np.fromfile(os.path.join(d, "params.bin"), dtype=np.float32)
    grads_flat = np.fromfile(os.path.join(d, "grads.bin"), dtype=np.float32)
    steps = len(spec["lrs"])
    total = sum(sizes)
    assert flat.size == total and grads_flat.size == total * steps

    params, off = [], 0
    for s, n in zip(shapes, sizes):
        params.append(torch.nn.Parameter(torch.from_numpy(flat[off:off + n].copy()).reshape(s)))
        off += n
    decay = [p for p, dk in zip(params, spec["decay"]) if dk]
    no_decay = [p for p, dk in zip(params, spec["decay"]) if not dk]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.0, betas=(spec["beta1"], spec["beta2"]), eps=spec["eps"], foreach=False)

    norms = []
    for k in range(steps):
        base = k * total
        off = 0
        for p, n in zip(params, sizes):
            p.grad = torch.from_numpy(grads_flat[base + off:base + off + n].copy()).reshape(p.shape)
            off += n
        norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params))
        norms.append(norm)
        max_norm = spec["max_grad_norm"]
        if max_norm is not None and max_norm > 0 and not norm < max_norm:
            scale = max_norm / norm
            for p in params:
                p.grad.mul_(scale)
        for g in opt.param_groups:
            g["lr"] = spec["lrs"][k]
        opt.step()

    np.concatenate([p.detach().numpy().reshape(-1) for p in params]).astype(np.float32).tofile(os.path.join(d, "out.bin"))
    json.dump(norms, open(os.path.join(d, "norms.json"), "w"))


if __name__ == "__main__":
    main(sys.argv[1])
