#!/usr/bin/env python3
"""Reference GPT-2 in plain PyTorch (Debian python3-torch), written to Hugging Face GPT-2's semantics and
parameter layout (Conv1D weights are (in, out); c_attn packs q, k, v; tied LM head), independent of the C++ code.

usage: gpt2_reference.py DIR
  DIR/config.json     {"n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "layer_norm_epsilon",
                       "scale_attn_by_inverse_layer_idx", "z_loss_weight"}
  DIR/params/<key>.npy  one file per HF parameter key (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...)
  DIR/ids.npy         int64 (batch, seq)
Writes DIR/out/logits.npy, DIR/out/loss.npy and DIR/out/grad/<key>.npy (gradients of the mean next-token loss).
"""
import json, math, os, sys
import numpy as np
import torch
import torch.nn.functional as F


def main(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    torch.set_num_threads(1)
    params = {}
    for f in sorted(os.listdir(os.path.join(d, "params"))):
        params[f[:-4]] = torch.tensor(np.load(os.path.join(d, "params", f)), requires_grad=True)
    ids = torch.tensor(np.load(os.path.join(d, "ids.npy")))
    B, T = ids.shape
    C, H, L = cfg["n_embd"], cfg["n_head"], cfg["n_layer"]
    D = C // H
    eps = cfg["layer_norm_epsilon"]
    p = lambda k: params["transformer." + k]

    x = p("wte.weight")[ids] + p("wpe.weight")[torch.arange(T)]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(L):
        pre = f"h.{i}."
        h = F.layer_norm(x, (C,), p(pre + "ln_1.weight"), p(pre + "ln_1.bias"), eps)
        qkv = h @ p(pre + "attn.c_attn.weight") + p(pre + "attn.c_attn.bias")
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        if cfg["scale_attn_by_inverse_layer_idx"]:
            att = att / float(i + 1)
        att = att.masked_fill(~causal, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + (y @ p(pre + "attn.c_proj.weight") + p(pre + "attn.c_proj.bias"))
        h = F.layer_norm(x, (C,), p(pre + "ln_2.weight"), p(pre + "ln_2.bias"), eps)
        m = F.gelu(h @ p(pre + "mlp.c_fc.weight") + p(pre + "mlp.c_fc.bias"), approximate="tanh")
        x = x + (m @ p(pre + "mlp.c_proj.weight") + p(pre + "mlp.c_proj.bias"))
    x = F.layer_norm(x, (C,), p("ln_f.weight"), p("ln_f.bias"), eps)
    logits = x @ p("wte.weight").t()
    # next-token loss: position t predicts ids[t + 1]; the last position has no target
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    tgt = ids[:, 1:].reshape(-1)
    per = F.cross_entropy(lg, tgt, reduction="none")
    z = cfg.get("z_loss_weight", 0.0)
    if z:
        per = per + z * torch.logsumexp(lg, dim=-1) ** 2
    loss = per.mean()
    loss.backward()
    out = os.path.join(d, "out")
    os.makedirs(os.path.join(out, "grad"), exist_ok=True)
    np.save(os.path.join(out, "logits.npy"), logits.detach().numpy())
    np.save(os.path.join(out, "loss.npy"), loss.detach().numpy())
    for k, t in params.items():
        np.save(os.path.join(out, "grad", k + ".npy"), t.grad.numpy())


if __name__ == "__main__":
    main(sys.argv[1])
