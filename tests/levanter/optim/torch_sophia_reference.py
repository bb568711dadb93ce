#!/usr/bin/env python3
"""Reference for tests/levanter/optim/test_sophia.cpp: Sophia written out in PyTorch from the paper's published
algorithm (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
Pre-training", Algorithm 3, in Levanter's order: the update uses the estimate h from before this step, and a new
Hessian estimate enters h after every `update_interval`-th update), run on the inputs the test wrote.

    python3 torch_sophia_reference.py DIR

For update t = 1, 2, ... with learning rate lr_t, gradient g, momentum m and estimate h (zeros at the start):
    m = beta1 * m + (1 - beta1) * g
    u = clip((m / (1 - beta1^t)) / max(gamma * h, eps), -clip_threshold, clip_threshold)
    p = p - lr_t * (u + wd * p)                       (wd = 0 for the parameters the mask leaves out)
    if t % update_interval == 0:  h = beta2 * h + (1 - beta2) * hhat_t
where hhat_t is the Hessian-diagonal estimate given for update t (DIR/hess.bin holds one per such update).

DIR/spec.json: {"shapes", "decay", "lrs", "beta1", "beta2", "eps", "gamma", "clip_threshold", "update_interval",
"weight_decay"}; DIR/params.bin, DIR/grads.bin as in torch_adamw_reference.py. Writes DIR/out.bin (parameters),
DIR/m.bin and DIR/h.bin (final m and h).
"""
import json
import os
import sys

import numpy as np
import torch


def read_list(flat, shapes, sizes, base):
    out, off = [], base
    for s, n in zip(shapes, sizes):
        out.append(torch.from_numpy(flat[off:off + n].copy()).reshape(s).double())
        off += n
    return out


def main(d):
    spec = json.load(open(os.path.join(d, "spec.json")))
    shapes = [tuple(s) for s in spec["shapes"]]
    sizes = [int(np.prod(s)) if s else 1 for s in shapes]
    total = sum(sizes)
    params = read_list(np.fromfile(os.path.join(d, "params.bin"), dtype=np.float32), shapes, sizes, 0)
    grads_flat = np.fromfile(os.path.join(d, "grads.bin"), dtype=np.float32)
    hess_flat = np.fromfile(os.path.join(d, "hess.bin"), dtype=np.float32)
    b1, b2, eps, gamma = spec["beta1"], spec["beta2"], spec["eps"], spec["gamma"]
    clip, k = spec["clip_threshold"], spec["update_interval"]
    m = [torch.zeros_like(p) for p in params]
    h = [torch.zeros_like(p) for p in params]
    estimates = 0
    for step, lr in enumerate(spec["lrs"]):
        t = step + 1
        grads = read_list(grads_flat, shapes, sizes, step * total)
        for i, g in enumerate(grads):
            wd = spec["weight_decay"] if spec["decay"][i] else 0.0
            m[i] = b1 * m[i] + (1 - b1) * g
            u = (m[i] / (1 - b1 ** t)) / torch.clamp(gamma * h[i], min=eps)
            u = torch.clamp(u, -clip, clip)
            params[i] = params[i] - lr * (u + wd * params[i])
        if t % k == 0:
            est = read_list(hess_flat, shapes, sizes, estimates * total)
            h = [b2 * hi + (1 - b2) * e for hi, e in zip(h, est)]
            estimates += 1
    for name, tensors in (("out.bin", params), ("m.bin", m), ("h.bin", h)):
        with open(os.path.join(d, name), "wb") as f:
            for x in tensors:
                f.write(x.float().contiguous().numpy().tobytes())


if __name__ == "__main__":
    main(sys.argv[1])
