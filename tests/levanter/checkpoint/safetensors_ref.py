#!/usr/bin/env python3
"""Independent safetensors reader/writer for levanter-cpp's interop tests (json + struct + numpy only).

    safetensors_ref.py describe FILE        parse FILE strictly, print a JSON description on stdout
    safetensors_ref.py write FILE           write the reference tensors (below) with this script's own writer
    safetensors_ref.py st-describe FILE     the same description, read with Hugging Face's `safetensors`
    safetensors_ref.py st-write FILE        the reference tensors, written with Hugging Face's `safetensors`
                                            (through torch, for BF16)

The description: {"metadata": {...}, "order": [names in data order],
                  "tensors": {name: {"dtype", "shape", "crc32", "values"}}}; values are a flat list (floats for
F16/BF16/F32/F64, ints otherwise; BF16 decoded from its bits), given for tensors of at most 64 elements.
The C++ test compares it with what it wrote, and checks the reference tensors it reads against its own copy of
the values listed in reference_tensors().
"""
import json
import struct
import sys
import zlib

import numpy as np

NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
      "I8": "i1", "U8": "u1", "BOOL": "?"}


def fail(msg):
    print("safetensors_ref.py: " + msg, file=sys.stderr)
    sys.exit(2)


def values_of(dtype, arr):
    flat = arr.reshape(-1)
    if flat.size > 64:
        return None
    if dtype == "BF16":
        return [float(x) for x in (flat.astype(np.uint32) << 16).view(np.float32)]
    if dtype in ("F16", "F32", "F64"):
        return [float(x) for x in flat]
    return [int(x) for x in flat]


def describe(path):
    data = open(path, "rb").read()
    if len(data) < 8:
        fail("file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n % 8 != 0:
        fail(f"header length {n} is not a multiple of 8")
    raw = data[8:8 + n]
    if len(raw) != n:
        fail("truncated header")
    text = raw.decode("utf-8")
    stripped = text.rstrip(" ")
    if not stripped.startswith("{") or not stripped.endswith("}"):
        fail("header is not a JSON object padded with spaces")
    header = json.loads(stripped, object_pairs_hook=lambda pairs: dict(pairs))
    body = data[8 + n:]
    meta = header.pop("__metadata__", {})
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    pos = 0
    out = {"metadata": meta, "order": [], "tensors": {}}
    for name, info in entries:
        if set(info) != {"dtype", "shape", "data_offsets"}:
            fail(f"{name}: unexpected keys {sorted(info)}")
        begin, end = info["data_offsets"]
        if begin != pos:
            fail(f"{name}: begins at {begin}, expected {pos}")
        dt = np.dtype(NP[info["dtype"]])
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - begin != count * dt.itemsize:
            fail(f"{name}: {end - begin} bytes for shape {info['shape']}")
        arr = np.frombuffer(body[begin:end], dtype=dt).reshape(info["shape"])
        out["order"].append(name)
        out["tensors"][name] = {"dtype": info["dtype"], "shape": info["shape"],
                                "crc32": zlib.crc32(body[begin:end]), "values": values_of(info["dtype"], arr)}
        pos = end
    if pos != len(body):
        fail(f"{len(body) - pos} trailing bytes")
    return out


def bf16_bits(xs):
    return (np.array(xs, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def reference_tensors():
    """(name, dtype, numpy array) in the order written; the C++ test holds the same values."""
    return [
        ("py.f32", "F32", (np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1)),
        ("py.bf16", "BF16", bf16_bits([1.0, -2.5, 3.140625])),
        ("py.f16", "F16", np.array([0.5, -1.0, 65504.0], dtype=np.float16)),
        ("py.f64", "F64", np.array([1.0 / 3.0, -1e300], dtype=np.float64)),
        ("py.i64", "I64", np.array([-(2 ** 63), 2 ** 63 - 1, 0], dtype=np.int64)),
        ("py.i32", "I32", np.array([[-7], [2 ** 31 - 1]], dtype=np.int32)),
        ("py.i16", "I16", np.array([-32768, 12345], dtype=np.int16)),
        ("py.i8", "I8", np.array([-128, 127, 0], dtype=np.int8)),
        ("py.u8", "U8", np.array([0, 255, 7], dtype=np.uint8)),
        ("py.bool", "BOOL", np.array([True, False, True], dtype=np.bool_)),
        ("py.scalar", "F32", np.array(42.0, dtype=np.float32)),
        ("py.empty", "F32", np.zeros((0, 4), dtype=np.float32)),
    ]


def write(path):
    header = {"__metadata__": {"format": "np", "writer": "safetensors_ref.py"}}
    body = b""
    for name, dtype, arr in reference_tensors():
        raw = arr.astype(NP[dtype]).tobytes()  # C order
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


def st_describe(path):
    # Hugging Face's Rust parser (which validates the file) hands back each tensor's raw bytes; no torch needed.
    from safetensors import deserialize, safe_open

    out = {"metadata": {}, "order": [], "tensors": {}}
    with safe_open(path, framework="numpy") as f:
        out["metadata"] = f.metadata() or {}
    with open(path, "rb") as f:
        contents = f.read()
    for name, info in deserialize(contents):
        raw = bytes(info["data"])
        arr = np.frombuffer(raw, dtype=np.dtype(NP[info["dtype"]])).reshape(info["shape"])
        out["tensors"][name] = {"dtype": info["dtype"], "shape": list(info["shape"]), "crc32": zlib.crc32(raw),
                                "values": values_of(info["dtype"], arr)}
    # the library reports tensors in its own order; the data order comes from the header
    out["order"] = describe(path)["order"]
    return out


def st_write(path):
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name, dtype, arr in reference_tensors():
        if dtype == "BF16":
            tensors[name] = torch.from_numpy(arr.astype(np.int16)).view(torch.bfloat16)
        else:
            tensors[name] = torch.from_numpy(arr.copy())  # (np.ascontiguousarray would make a 0-d array 1-d)
    save_file(tensors, path, metadata={"format": "pt", "writer": "safetensors"})


def main():
    if len(sys.argv) != 3:
        fail(__doc__)
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "describe":
        print(json.dumps(describe(path)))
    elif cmd == "write":
        write(path)
    elif cmd == "st-describe":
        print(json.dumps(st_describe(path)))
    elif cmd == "st-write":
        st_write(path)
    else:
        fail("unknown command " + cmd)


if __name__ == "__main__":
    main()
