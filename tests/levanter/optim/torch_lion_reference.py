#!/usr/bin/env python3
"""Reference for tests/levanter/optim/test_lion.cpp: Lion written out in PyTorch from the paper's published
algorithm (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2, with decoupled weight
decay), run on the inputs the test wrote.

    python3 torch_lion_reference.py DIR

For each step t with learning rate lr_t, gradient g, momentum m (zeros at the start), weight decay wd (0 for the
parameters the mask leaves out):
    c = beta1 * m + (1 - beta1) * g        (interpolation)
    p = p - lr_t * (sign(c) + wd * p)      (update with decoupled weight decay)
    m = beta2 * m + (1 - beta2) * g        (momentum)
before which the gradients are clipped as Levanter clips them (optax.clip_by_global_norm: multiplied by
max_norm / norm when norm >= max_norm, the norm in float64 here).

DIR/spec.json: {"shapes", "decay", "lrs", "beta1", "beta2", "weight_decay", "max_grad_norm"}; DIR/params.bin and
DIR/grads.bin as in torch_adamw_reference.py. Writes DIR/out.bin (final parameters) and DIR/momentum.bin (final m).
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
        params.append(torch.from_numpy(flat[off:off + n].copy()).reshape(s))
        off += n
    moms = [torch.zeros_like(p) for p in params]
    b1, b2 = spec["beta1"], spec["beta2"]
    for k in range(steps):
        base = k * total
        grads, off = [], 0
        for p, n in zip(params, sizes):
            grads.append(torch.from_numpy(grads_flat[base + off:base + off + n].copy()).reshape(p.shape))
            off += n
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        max_norm = spec["max_grad_norm"]
        if max_norm is not None and max_norm > 0 and not norm < max_norm:
            grads = [g * (max_norm / norm) for g in grads]
        lr = spec["lrs"][k]
        for i, (p, g) in enumerate(zip(params, grads)):
            wd = spec["weight_decay"] if spec["decay"][i] else 0.0
            c = moms[i] * b1 + g * (1.0 - b1)
            params[i] = p - (torch.sign(c) + p * wd) * lr
            moms[i] = moms[i] * b2 + g * (1.0 - b2)

    with open(os.path.join(d, "out.bin"), "wb") as f:
        for p in params:
            f.write(p.contiguous().numpy().astype(np.float32).tobytes())
    with open(os.path.join(d, "momentum.bin"), "wb") as f:
        for m in moms:
            f.write(m.contiguous().numpy().astype(np.float32).tobytes())


if __name__ == "__main__":
    main(sys.argv[1])
