#!/usr/bin/env python3
"""Writes the starting corpus of each fuzz target into fuzz/corpus/<target>/seed-*: real files of the project
(configs, test tokenizers, JSONL in every compression) and small generated ones. Run once when a target is added;
the committed corpus is these seeds plus what `scripts/fuzz --update-corpus` merged in. Needs only Python and the
`zstd` program (Debian's zstd)."""
import gzip
import json
import pathlib
import struct
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c", "-19"], input=data, stdout=subprocess.PIPE, check=True).stdout


# --- config: config.yaml NUL inc.yaml NUL overrides (one per line) ------------------------------------------
source = (ROOT / "tests/data/levanter_configs/data/openwebtext_source.yaml").read_bytes()
for p in sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / "tests/data/levanter_configs").glob("*.yaml")):
    text = p.read_bytes()
    if b"!include data/openwebtext_source.yaml" in text:  # the included file is the input's second part
        text = text.replace(b"data/openwebtext_source.yaml", b"inc.yaml") + b"\0" + source
    put("fuzz_config", p.parent.name + "-" + p.stem, text)
put("fuzz_config", "include", b"data: !include inc.yaml\nmodel: {type: llama, hidden_dim: 64, num_heads: 4, num_kv_heads: 2}\n\0" + source)
put("fuzz_config", "overrides",
    b"trainer:\n  num_train_steps: 10\n\0\0--trainer.num_train_steps\n20\n--optimizer.type=lion\n"
    b"--model.type=backpack\n--trainer.checkpointer.keep=[{every: 5}]\n--data.shuffle=3")
put("fuzz_config", "mixture", """data:
  configs:
    kjv: {train_urls: [a.jsonl], validation_urls: [b.jsonl.zst]}
    austen: {train_urls: ["c/{x,y}.jsonl.gz"]}
  train_weights: [[0, {kjv: 1.0}], [1024, {kjv: 0.5, austen: 0.5}]]
  mixture_block_size: 512
  tokenizer: gpt2
optimizer:
  type: sophia-h
  lr_schedule: {type: inv_sqrt, timescale: 100}
  cycles: [10, 20]
  weight_decay_modules: ["attn", "mlp"]
trainer:
  mp: p=f32,c=bfloat16
  tracker: [{type: json}]
  id: run-1
  checkpointer: {save_interval: 10m, keep: [{every: 100, until: 1000}]}
z_loss_weight: 1e-4
hf_save_dtype: bfloat16
""")
put("fuzz_config", "alias", b"trainer:\n  seed: &s 1\n  log_every: 2\ndata_seed: *s\nmodel: {type: gpt2, seq_len: 64}\n")

# --- tokenizer.json [NUL text] -------------------------------------------------------------------------------
tok_dir = ROOT / "tests/data/tokenizer"
for name in ["llama_legacy.json", "llama_metaspace.json", "metaspace_split.json"]:
    put("fuzz_tokenizer_json", name.removesuffix(".json"), (tok_dir / name).read_bytes())
# A byte-level (GPT-2 style) tokenizer, trimmed to the 256 byte tokens and a few merges, with the overlays'
# added tokens and post-processors.
byte_chars = [c for c in range(ord("!"), ord("~") + 1)] + [c for c in range(0xA1, 0xAD)] + [
    c for c in range(0xAE, 0x100)]
table, n = {}, 0
for b in range(256):
    if b in byte_chars:
        table[b] = chr(b)
    else:
        table[b] = chr(256 + n)
        n += 1
vocab = {table[b]: i for i, b in enumerate(range(256))}
merges = []
for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n")]:
    vocab.setdefault(a + b, len(vocab))
    merges.append(f"{a} {b}")
gpt2 = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": len(vocab), "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": True, "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
}
put("fuzz_tokenizer_json", "gpt2_trimmed", json.dumps(gpt2, ensure_ascii=False))
roberta = dict(gpt2)
roberta.update(json.loads((tok_dir / "gpt2_prefix_space.overlay.json").read_text()))
for t in roberta["added_tokens"]:
    t["id"] = len(vocab) + (t["content"] == "<mask>")
roberta["post_processor"]["sep"][1] = roberta["post_processor"]["cls"][1] = len(vocab)
put("fuzz_tokenizer_json", "gpt2_trimmed_roberta", json.dumps(roberta, ensure_ascii=False).encode() +
    b"\0 <mask> Hello<|endoftext|> world \xf0\x9f\x98\x80")
templ = dict(gpt2)
templ["merges_as_pairs"] = None
templ["model"] = dict(gpt2["model"], merges=[m.split(" ") for m in merges])
templ["normalizer"] = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
templ["post_processor"] = {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>",
                                                                             "ids": [len(vocab)],
                                                                             "tokens": ["<|endoftext|>"]}}}
templ["decoder"] = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
del templ["merges_as_pairs"]
put("fuzz_tokenizer_json", "gpt2_trimmed_template", json.dumps(templ, ensure_ascii=False) + "\0the theater")

# --- JSONL: plain, CRLF, gzip (two members), zstd --------------------------------------------------------------
lines = [json.dumps({"text": t}) for t in ["It is a truth universally acknowledged", "caf\u00e9 \u4f60\u597d",
                                             "line\nbreak \ud83d\ude00", ""]]
plain = ("\n".join(lines) + "\n\n  \n" + json.dumps({"id": 3, "text": "last", "meta": {"a": [1, 2]}})).encode()
put("fuzz_jsonl", "plain", plain)
put("fuzz_jsonl", "crlf", plain.replace(b"\n", b"\r\n"))
put("fuzz_jsonl", "gzip", gzip.compress(plain, mtime=0))
put("fuzz_jsonl", "gzip_members", gzip.compress(plain[:40], mtime=0) + gzip.compress(plain[40:], mtime=0))
put("fuzz_jsonl", "zstd", zstd(plain))
austen = gzip.decompress((ROOT / "tests/data/austen/validation.jsonl.gz").read_bytes())
put("fuzz_jsonl", "austen", austen[:austen.index(b"\n", 1000) + 1])


# --- safetensors --------------------------------------------------------------------------------------------
def safetensors(tensors, metadata=None, pad=True):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("fuzz_safetensors", "f32", safetensors([("wte.weight", "F32", [2, 3], struct.pack("<6f", *range(6)))],
                                            {"format": "pt"}))
put("fuzz_safetensors", "mixed", safetensors([
    ("a", "BF16", [3], b"\x80\x3f" * 3), ("b", "I8", [1, 1, 1], b"\x7f"), ("c", "BOOL", [2], b"\x00\x01"),
    ("d", "F64", [], struct.pack("<d", 2.5)), ("e", "I64", [0, 4], b""), ("f", "F16", [2], b"\x00\x3c\x00\xc0"),
    ("g", "I32", [1], b"\x01\x00\x00\x00"), ("h", "I16", [2], b"\x01\x00\x02\x00"), ("i", "U8", [3], b"abc")],
    pad=False))
put("fuzz_safetensors", "empty", safetensors([], {}))
