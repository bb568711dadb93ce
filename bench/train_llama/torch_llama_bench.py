#!/usr/bin/env python3
"""Compact Llama training-throughput benchmark for PyTorch on CPU (eager or torch.compile): the Llama sibling of
../shared/peers/torch_gpt2_bench.py, with the same command line and RESULT line.

Architecture as Hugging Face's LlamaForCausalLM (and levanter's model.type: llama): rotary position embeddings
(theta 10000, rotate_half convention), RMSNorm (eps 1e-5) with a weight and no bias, SwiGLU MLP
(down(silu(gate(x)) * up(x))), grouped-query attention (--kv-heads key/value heads, each shared by
heads/kv-heads query heads; keys and values repeated per group as transformers' repeat_kv does), no biases,
no dropout, LM head tied to the token embedding. AdamW lr 3e-4. Random tokens, random init (std 0.02); only
timing matters.

usage: OMP_NUM_THREADS=2 python3 torch_llama_bench.py --B 4 --T 64 --vocab 50257 --precision fp32
       model size: --layers 12 --heads 12 --kv-heads 12 --dim 768 --inter 2048 --max-T 1024
       --precision bf16 runs forward+loss under torch.autocast('cpu', dtype=torch.bfloat16)
       --compile wraps the model in torch.compile (PyTorch >= 2.0); --attn sdpa uses
       F.scaled_dot_product_attention(is_causal=True) (PyTorch >= 2.0).
Prints one line per timed step and a final JSON summary line (prefix 'RESULT ').
"""
import argparse, json, math, os, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, C, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Block(nn.Module):
    def __init__(self, C, NH, KV, hs, inter, maxT, attn_impl):
        super().__init__()
        self.NH, self.KV, self.hs, self.attn_impl = NH, KV, hs, attn_impl
        self.input_layernorm = RMSNorm(C)
        self.q_proj = nn.Linear(C, NH * hs, bias=False)
        self.k_proj = nn.Linear(C, KV * hs, bias=False)
        self.v_proj = nn.Linear(C, KV * hs, bias=False)
        self.o_proj = nn.Linear(NH * hs, C, bias=False)
        self.post_attention_layernorm = RMSNorm(C)
        self.gate_proj = nn.Linear(C, inter, bias=False)
        self.up_proj = nn.Linear(C, inter, bias=False)
        self.down_proj = nn.Linear(inter, C, bias=False)
        self.register_buffer("mask", torch.tril(torch.ones(maxT, maxT, dtype=torch.bool)).view(1, 1, maxT, maxT))

    def attn(self, x, cos, sin):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.NH, self.hs).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.hs).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.hs).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.KV != self.NH:  # transformers' repeat_kv
            k = k.repeat_interleave(self.NH // self.KV, dim=1)
            v = v.repeat_interleave(self.NH // self.KV, dim=1)
        if self.attn_impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hs))
            att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, self.NH * self.hs)
        return self.o_proj(y)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.input_layernorm(x), cos, sin)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, V, maxT, L, NH, KV, C, inter, attn_impl="manual", theta=10000.0):
        super().__init__()
        hs = C // NH
        self.embed_tokens = nn.Embedding(V, C)
        self.layers = nn.ModuleList([Block(C, NH, KV, hs, inter, maxT, attn_impl) for _ in range(L)])
        self.norm = RMSNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied
        inv_freq = 1.0 / (theta ** (torch.arange(0, hs, 2, dtype=torch.int64).float() / hs))
        freqs = torch.outer(torch.arange(maxT).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos())
        self.register_buffer("sin", emb.sin())
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.embed_tokens(idx)
        cos, sin = self.cos[:T], self.sin[:T]
        for blk in self.layers:
            x = blk(x, cos, sin)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=None, dest="kv_heads", help="default: --heads (multi-head)")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--inter", type=int, default=2048)
    ap.add_argument("--max-T", type=int, default=1024, dest="maxT")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--attn", choices=["manual", "sdpa"], default="manual")
    a = ap.parse_args()
    kv = a.kv_heads or a.heads
    assert a.T <= a.maxT, "--T must not exceed --max-T"
    assert a.heads % kv == 0, "--kv-heads must divide --heads"
    if a.compile and not hasattr(torch, "compile"):
        ap.error(f"--compile needs PyTorch >= 2.0; this is torch {torch.__version__}")
    if a.attn == "sdpa" and not hasattr(F, "scaled_dot_product_attention"):
        ap.error(f"--attn sdpa needs PyTorch >= 2.0; this is torch {torch.__version__}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    torch.manual_seed(a.seed)
    model = Llama(a.vocab, a.maxT, a.layers, a.heads, kv, a.dim, a.inter, a.attn)
    nparams = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    fwd = torch.compile(model) if a.compile else model
    data_vocab = min(50257, a.vocab)

    times, warm_times = [], []
    for step in range(a.warmup + a.steps):
        x = torch.randint(0, data_vocab, (a.B, a.T))
        y = torch.randint(0, data_vocab, (a.B, a.T))
        t0 = time.perf_counter()
        if a.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = fwd(x, y)
        else:
            loss = fwd(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        tag = "warmup" if step < a.warmup else "step"
        print(f"{tag} {step}: loss {loss.item():.4f} {dt*1000:.1f} ms", flush=True)
        (times if step >= a.warmup else warm_times).append(dt)
    med = statistics.median(times)
    res = dict(impl="pytorch-compile" if a.compile else "pytorch-eager", torch=torch.__version__,
               threads=torch.get_num_threads(), precision=a.precision, B=a.B, T=a.T, vocab=a.vocab, layers=a.layers,
               heads=a.heads, kv_heads=kv, dim=a.dim, inter=a.inter, params=nparams, attn=a.attn,
               warmup_ms=[w * 1000 for w in warm_times], ms_median=med * 1000,
               ms_mean=statistics.mean(times) * 1000, tok_per_s=a.B * a.T / med, steps=a.steps)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
