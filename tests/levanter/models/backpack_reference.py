#!/usr/bin/env python3
"""Reference Backpack language model in plain PyTorch (Debian python3-torch), restated from the paper (Hewitt,
Thickstun, Manning, Liang 2023, "Backpack Language Models", section 3) in Levanter's variant, independent of the
C++ code:

    senses   C(x)_l = FF(E x)_l                 per token, l = 1..num_senses (no positions)
    weights  alpha_l = softmax_j(q_l(h_i) . k_l(h_j) / sqrt(d))  causal, h = GPT-2(x) (the contextualization net)
    output   o_i = (1 / num_senses) sum_l sum_{j <= i} alpha_lij C(x_j)_l
    logits   o_i . E^T                           (E: the token embeddings, tied)

FF (Levanter's BackpackSenses): e = E x; h = LN(e); r = h + e; r = LN_1(r) ... precisely
    r = h + e;  r = MLP(LN_1(r)) + r;  h2 = LN_2(r);  C = MLP_final(h2) reshaped to (senses, embed)
with MLP(x) = gelu_tanh(x W_fc + b_fc) W_proj + b_proj.

usage: backpack_reference.py DIR
  DIR/config.json   {"n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "num_senses", "layer_norm_epsilon"}
  DIR/params/<key>.npy  every parameter under levanter-cpp's paths (backpack.gpt2_model.*, backpack.sense_network.*,
                    backpack.sense_weight_net.c_attn.*), matrices as (in, out) except sense_weight_net.c_attn.weight
                    (out, in), as torch.nn.Linear
  DIR/ids.npy       int64 (batch, seq)
Writes DIR/out/logits.npy, DIR/out/loss.npy and DIR/out/grad/<key>.npy.
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
    C, H, L, S = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["num_senses"]
    D, Ds = C // H, C // S
    eps = cfg["layer_norm_epsilon"]
    g = lambda k: params["backpack.gpt2_model." + k]
    sn = lambda k: params["backpack.sense_network." + k]
    ln = lambda x, pre: F.layer_norm(x, (C,), pre("weight"), pre("bias"), eps)
    mlp = lambda x, pre: F.gelu(x @ pre("c_fc.weight") + pre("c_fc.bias"), approximate="tanh") @ pre(
        "c_proj.weight") + pre("c_proj.bias")

    # Contextualization network: GPT-2.
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    x = g("wte.weight")[ids] + g("wpe.weight")[torch.arange(T)]
    for i in range(L):
        p = lambda k: g(f"h.{i}." + k)
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), eps)
        q, k, v = (h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")).split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(D)).masked_fill(~causal, float("-inf")).softmax(-1)
        x = x + ((att @ v).transpose(1, 2).reshape(B, T, C) @ p("attn.c_proj.weight") + p("attn.c_proj.bias"))
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), eps)
        x = x + (F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh") @ p("mlp.c_proj.weight")
                 + p("mlp.c_proj.bias"))
    hidden = F.layer_norm(x, (C,), g("ln_f.weight"), g("ln_f.bias"), eps)

    # Sense weights: per sense, causal softmax attention weights (no values).
    w = params["backpack.sense_weight_net.c_attn.weight"]  # (2 * C, C): (qk, senses, head_dim) x embed
    qk = (hidden @ w.t() + params["backpack.sense_weight_net.c_attn.bias"]).view(B, T, 2, S, Ds)
    q, k = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2)  # (B, S, T, Ds)
    alpha = ((q @ k.transpose(-1, -2)) / math.sqrt(Ds)).masked_fill(~causal, float("-inf")).softmax(-1)

    # Sense vectors: a function of each token alone.
    e = g("wte.weight")[ids]
    h = ln(e, lambda k: sn("ln." + k))
    r = h + e
    r = mlp(ln(r, lambda k: sn("block.ln_1." + k)), lambda k: sn("block.mlp." + k)) + r
    h2 = ln(r, lambda k: sn("block.ln_2." + k))
    senses = mlp(h2, lambda k: sn("final_mlp." + k)).view(B, T, S, C)

    out = torch.einsum("bsij,bjse->bie", alpha, senses) / S
    logits = out @ g("wte.weight").t()
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(lg, ids[:, 1:].reshape(-1))
    loss.backward()
    o = os.path.join(d, "out")
    os.makedirs(os.path.join(o, "grad"), exist_ok=True)
    np.save(os.path.join(o, "logits.npy"), logits.detach().numpy())
    np.save(os.path.join(o, "loss.npy"), loss.detach().numpy())
    for key, t in params.items():
        np.save(os.path.join(o, "grad", key + ".npy"), t.grad.numpy())


if __name__ == "__main__":
    main(sys.argv[1])
