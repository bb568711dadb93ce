#!/usr/bin/env python3
"""Builds the small hand-made Llama-style tokenizers used by tests/levanter/data/tokenizer (no network).

    python3 make_llama_style.py OUTDIR CORPUS.jsonl.gz...

A tiny SentencePiece-style BPE (ASCII characters, "▁" word prefix, 700 merges learned from the corpora,
<0x00>..<0xFF> byte-fallback tokens) written in three tokenizer.json layouts:
  llama_legacy.json     Llama-2 as converted by transformers (legacy): normalizer Prepend("▁") + Replace(" ", "▁"),
                        no pre-tokenizer, byte_fallback + fuse_unk, merges as "a b" strings, decoder
                        Replace/ByteFallback/Fuse/Strip, template "<s> $A".
  llama_metaspace.json  the newer layout: Metaspace pre-tokenizer (prepend_scheme "first", split false),
                        merges as ["a", "b"] pairs, decoder ByteFallback/Fuse/Metaspace, template "<s> $A </s>",
                        extra added tokens with lstrip/rstrip/single_word/normalized.
  metaspace_split.json  Metaspace (prepend_scheme "always", split true), no byte fallback (unknown characters
                        become <unk>, not fused), ignore_merges, no post-processor.
Reference ids come from Hugging Face tokenizers via make_refs.js.
"""
import collections
import gzip
import json
import sys

SP = "\u2581"


def train(texts, n_merges):
    alphabet = [chr(c) for c in range(33, 127)]
    known = set(alphabet) | {SP}
    words = collections.Counter()
    for t in texts:
        for w in t.replace("\n", " ").split(" "):
            if w:
                words[SP + w] += 1
    corpus = {tuple(w): c for w, c in words.items()}
    merges, vocab_extra = [], []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for syms, c in corpus.items():
            for a, b in zip(syms, syms[1:]):
                if a in known and b in known:
                    pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        known.add(a + b)
        vocab_extra.append(a + b)
        new = {}
        for syms, c in corpus.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        corpus = new
    # Llama has tokens for runs of "▁"; they also let merges cross word boundaries.
    merges += [(SP, SP), (SP + SP, SP + SP)]
    vocab_extra += [SP + SP, SP * 4]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for tok in [SP] + alphabet + vocab_extra:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    return vocab, merges


def added(id_, content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def template(single, specials):
    return {"type": "TemplateProcessing", "single": single,
            "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {s: {"id": s, "ids": [i], "tokens": [s]} for s, i in specials}}


def main():
    outdir, files = sys.argv[1], sys.argv[2:]
    texts = []
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(l)["text"] for l in fh if l.strip()]
    vocab, merges = train(texts, 700)
    base_added = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
    seq = {"Sequence": {"id": "A", "type_id": 0}}
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    eos = {"SpecialToken": {"id": "</s>", "type_id": 0}}

    def bpe(merge_style, byte_fallback=True, fuse_unk=True, ignore_merges=False):
        m = [a + " " + b for a, b in merges] if merge_style == "string" else [[a, b] for a, b in merges]
        return {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": fuse_unk, "byte_fallback": byte_fallback,
                "ignore_merges": ignore_merges, "vocab": vocab, "merges": m}

    legacy = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": base_added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "pre_tokenizer": None,
        "post_processor": template([bos, seq], [("<s>", 1)]),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SP}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": bpe("string"),
    }
    n = len(vocab)
    metaspace = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": base_added + [
            added(n, "<|user|>", special=False, normalized=True, lstrip=True, rstrip=True),
            added(n + 1, "[MASK]", special=True, normalized=False, single_word=True)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "split": False},
        "post_processor": template([bos, seq, eos], [("<s>", 1), ("</s>", 2)]),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "split": False}]},
        "model": bpe("pairs"),
    }
    split = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": base_added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "split": True},
        "post_processor": None,
        "decoder": {"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "split": True},
        "model": bpe("pairs", byte_fallback=False, fuse_unk=False, ignore_merges=True),
    }
    for name, tok in [("llama_legacy", legacy), ("llama_metaspace", metaspace), ("metaspace_split", split)]:
        with open(f"{outdir}/{name}.json", "w", encoding="utf-8") as fh:
            json.dump(tok, fh, ensure_ascii=False, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    main()
