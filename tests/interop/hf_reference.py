"""Hugging Face's side of tests/interop/test_hf_interop.cpp, run in the pinned venv (scripts/interop_env).

  hf_reference.py make DIR --ids IDS.npy --out LOGITS.npy [--layers L --heads H --embd E --positions P
                  --vocab V --seed S --max-shard-size SIZE]
      a random transformers GPT2LMHeadModel (every parameter perturbed, so biases and norms matter), saved with
      save_pretrained(DIR) as safetensors, and its logits on IDS
  hf_reference.py load DIR --ids IDS.npy --out LOGITS.npy [--text FILE --text-ids TEXT_IDS.npy]
      AutoModelForCausalLM.from_pretrained(DIR) and its logits; with --text, checks that AutoTokenizer(DIR)
      encodes the text to TEXT_IDS
  hf_reference.py torchload DIR --ids IDS.npy --out LOGITS.npy
      torch.load(DIR/pytorch_model.bin) into the config.json's model class with load_state_dict(strict=True)
  hf_reference.py generate DIR --prompt-ids IDS.npy --max-new N --out TOKENS.npy
      greedy continuation (generate(do_sample=False)) of the 1-D prompt IDS
  hf_reference.py llama DIR --ids IDS.npy --out PREFIX [--layers L --hidden E --heads H --kv-heads K
                   --intermediate I --positions P --vocab V --tie --rope-type default|linear|llama3 --rope-theta T
                   --rope-factor F --rope-original N --seed S --bin]
      a random transformers LlamaForCausalLM (every parameter perturbed), saved with save_pretrained(DIR); its
      logits on IDS (PREFIX_logits.npy), its loss with labels = IDS (PREFIX_loss.npy) and the gradient of that
      loss for every parameter under HF's names (PREFIX_grads.safetensors)
  hf_reference.py compare DIR_A DIR_B
      every tensor of the two directories' safetensors (shards merged) bit-identical, same names and dtypes

Offline: nothing is downloaded (HF_HUB_OFFLINE=1).
"""
import argparse
import glob
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, \
    LlamaForCausalLM


def logits_of(model, ids_path, out_path):
    ids = torch.from_numpy(np.load(ids_path)).long()
    model.eval()
    with torch.no_grad():
        logits = model(ids).logits.float()
    np.save(out_path, logits.numpy())


def make(a):
    torch.manual_seed(a.seed)
    cfg = GPT2Config(vocab_size=a.vocab, n_positions=a.positions, n_embd=a.embd, n_layer=a.layers, n_head=a.heads,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * a.noise)
    model.save_pretrained(a.dir, safe_serialization=not a.bin, max_shard_size=a.max_shard_size)
    logits_of(model, a.ids, a.out)


def llama(a):
    torch.manual_seed(a.seed)
    scaling = None
    if a.rope_type == "linear":
        scaling = {"rope_type": "linear", "factor": a.rope_factor}
    elif a.rope_type == "llama3":
        scaling = {"rope_type": "llama3", "factor": a.rope_factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": a.rope_original}
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=a.positions, rms_norm_eps=1e-5, tie_word_embeddings=a.tie,
                      rope_theta=a.rope_theta, rope_scaling=scaling, attn_implementation="eager")
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * a.noise)
    model.save_pretrained(a.dir, safe_serialization=not a.bin)
    ids = torch.from_numpy(np.load(a.ids)).long()
    model.train()  # no dropout in Llama; gradients on
    out = model(ids, labels=ids)
    out.loss.backward()
    np.save(a.out + "_logits.npy", out.logits.detach().float().numpy())
    np.save(a.out + "_loss.npy", np.array(out.loss.item(), dtype=np.float64))
    grads = {n: p.grad.detach().contiguous() for n, p in model.named_parameters()}
    save_file(grads, a.out + "_grads.safetensors")


def load(a):
    model = AutoModelForCausalLM.from_pretrained(a.dir)
    assert type(model).__name__ in ("GPT2LMHeadModel", "LlamaForCausalLM"), type(model).__name__
    if a.text:
        tok = AutoTokenizer.from_pretrained(a.dir)
        want = np.load(a.text_ids).tolist()
        got = tok(open(a.text, encoding="utf-8").read())["input_ids"]
        if got != want:
            sys.exit(f"AutoTokenizer({a.dir}) gives other ids: {got[:20]} ... vs ours {want[:20]} ...")
    logits_of(model, a.ids, a.out)


def torchload(a):
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(a.dir))
    state = torch.load(os.path.join(a.dir, "pytorch_model.bin"))
    model.load_state_dict(state, strict=True)
    logits_of(model, a.ids, a.out)


def generate(a):
    # Debian's torch 1.13 cannot import torch.distributed.fsdp on Python 3.11 (a dataclass error), which
    # transformers' generate() only uses to ask whether the model is FSDP-wrapped: it is not.
    import transformers.generation.utils as gen_utils
    gen_utils.is_fsdp_managed_module = lambda module: False
    model = AutoModelForCausalLM.from_pretrained(a.dir)
    model.eval()
    ids = torch.from_numpy(np.load(a.prompt_ids)).long().unsqueeze(0)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=a.max_new,
                             pad_token_id=model.config.eos_token_id)
    np.save(a.out, out[0, ids.shape[1]:].numpy().astype(np.int64))


def tensors(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        out.update(load_file(f))
    return out


def compare(a):
    ta, tb = tensors(a.dir_a), tensors(a.dir_b)
    if sorted(ta) != sorted(tb):
        sys.exit(f"different tensor names: {sorted(set(ta) ^ set(tb))}")
    bad = [k for k in ta if ta[k].dtype != tb[k].dtype or ta[k].shape != tb[k].shape or not torch.equal(ta[k], tb[k])]
    if bad:
        sys.exit(f"{len(bad)} tensors differ, e.g. {bad[:3]}")
    print(f"{len(ta)} tensors bit-identical")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--ids", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--embd", type=int, default=64)
    m.add_argument("--positions", type=int, default=64)
    m.add_argument("--vocab", type=int, default=50257)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--max-shard-size", default="5GB")
    m.add_argument("--bin", action="store_true", help="pytorch_model.bin instead of safetensors")
    m.add_argument("--noise", type=float, default=0.05, help="std of the noise added to every parameter")
    ll = sub.add_parser("llama")
    ll.add_argument("dir")
    ll.add_argument("--ids", required=True)
    ll.add_argument("--out", required=True)
    ll.add_argument("--layers", type=int, default=2)
    ll.add_argument("--hidden", type=int, default=64)
    ll.add_argument("--heads", type=int, default=4)
    ll.add_argument("--kv-heads", type=int, default=4)
    ll.add_argument("--intermediate", type=int, default=96)
    ll.add_argument("--positions", type=int, default=128)
    ll.add_argument("--vocab", type=int, default=50257)
    ll.add_argument("--tie", action="store_true")
    ll.add_argument("--rope-type", default="default", choices=["default", "linear", "llama3"])
    ll.add_argument("--rope-theta", type=float, default=10000.0)
    ll.add_argument("--rope-factor", type=float, default=8.0)
    ll.add_argument("--rope-original", type=int, default=16)
    ll.add_argument("--seed", type=int, default=0)
    ll.add_argument("--noise", type=float, default=0.05)
    ll.add_argument("--bin", action="store_true")
    t = sub.add_parser("torchload")
    t.add_argument("dir")
    t.add_argument("--ids", required=True)
    t.add_argument("--out", required=True)
    l = sub.add_parser("load")
    l.add_argument("dir")
    l.add_argument("--ids", required=True)
    l.add_argument("--out", required=True)
    l.add_argument("--text")
    l.add_argument("--text-ids")
    g = sub.add_parser("generate")
    g.add_argument("dir")
    g.add_argument("--prompt-ids", required=True)
    g.add_argument("--max-new", type=int, required=True)
    g.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("dir_a")
    c.add_argument("dir_b")
    a = ap.parse_args()
    {"make": make, "llama": llama, "load": load, "torchload": torchload, "generate": generate, "compare": compare}[a.cmd](a)


if __name__ == "__main__":
    main()
