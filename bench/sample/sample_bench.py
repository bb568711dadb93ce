"""bench/sample/run's driver: see that script. Runs in the interop venv (transformers on Debian's torch)."""
import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
import transformers.generation.utils as gen_utils  # noqa: E402
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

gen_utils.is_fsdp_managed_module = lambda module: False  # Debian's torch 1.13 cannot import fsdp on Python 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def prompts(tok, n, length):
    out = []
    with gzip.open(os.path.join(ROOT, "data", "corpus", "austen", "validation.jsonl.gz"), "rt") as f:
        for line in f:
            ids = tok(json.loads(line)["text"])["input_ids"]
            for start in range(0, len(ids) - length, 997):
                out.append(ids[start:start + length])
                if len(out) == n:
                    return out
    raise SystemExit("not enough text for the prompts")


def hf_rate(model, batch, new):
    ids = torch.tensor(batch)
    with torch.no_grad():
        model.generate(ids[:, :4], attention_mask=torch.ones_like(ids[:, :4]), do_sample=False, max_new_tokens=2,
                       pad_token_id=50256)  # warm-up
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                             min_new_tokens=new, pad_token_id=50256)
        s = time.perf_counter() - t0
    return (out.shape[1] - ids.shape[1]) * ids.shape[0] / s


def our_rate(binary, model_dir, batch, new, tok, threads, work):
    pf = os.path.join(work, f"prompts{len(batch)}.jsonl")
    with open(pf, "w") as f:
        for p in batch:
            f.write(json.dumps({"prompt": tok.decode(p)}) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run([binary, "sample", "--hf", model_dir, "--prompts", pf, "--temperature", "0",
                        "--max_new_tokens", str(new), "--no_eos"], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"levanter sample failed:\n{p.stderr}")
    m = re.search(r"([0-9.]+) tokens/s", p.stderr)
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=128)
    a = ap.parse_args()
    threads = int(os.environ.get("THREADS", "2"))
    torch.set_num_threads(threads)
    binary = os.path.join(ROOT, os.environ.get("BUILD_DIR", "build"), "levanter")
    with tempfile.TemporaryDirectory() as work:
        model_dir = os.path.join(work, "gpt2")
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_positions=1024))  # GPT-2 124M
        model.eval()
        model.save_pretrained(model_dir, safe_serialization=True)
        tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "data", "gpt2"))
        tok.save_pretrained(model_dir)
        ps = prompts(tok, 8, 16)
        rows = []
        for b in (1, 8):
            batch = ps[:b]
            theirs = hf_rate(model, batch, a.new)
            ours = our_rate(binary, model_dir, batch, a.new, tok, threads, work)
            rows.append({"batch": b, "new_tokens": a.new, "transformers_tok_s": round(theirs, 1),
                         "ours_tok_s": round(ours, 1), "ratio": round(ours / theirs, 3)})
            print(f"GPT-2 124M batch {b}: transformers {theirs:8.1f} tok/s  ours {ours:8.1f} tok/s  "
                  f"ratio {ours / theirs:.2f}x", flush=True)
    print("RESULT " + json.dumps({"bench": "sample", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "threads": threads, "torch": torch.__version__,
                                  "min_ratio": min(r["ratio"] for r in rows), "cases": rows}))


if __name__ == "__main__":
    main()
