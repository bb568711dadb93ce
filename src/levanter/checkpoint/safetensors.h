// Safetensors (https://huggingface.co/docs/safetensors), read and written exactly, so that checkpoints can be
// opened by Python's `safetensors`, numpy, and Hugging Face tools.
//
// The format: 8 bytes, little-endian u64 N; N bytes of a UTF-8 JSON object, padded with spaces so that N is a
// multiple of 8; then the data section. The JSON maps each tensor name to
//   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// (offsets relative to the data section) and may hold "__metadata__": {string: string}. Tensors are stored
// row-major, little-endian, back to back: together they cover the data section exactly.
//
// Writing keeps the caller's order (in the header and in the data). Reading returns tensors in data order
// (for our files, the order written) and validates everything before touching the data: header length,
// JSON, dtypes, shapes, offsets in bounds, no overlap and no gap, byte counts equal to dtype size x elements.
// Any violation is a CheckpointError naming the file (and the tensor); a corrupt file never crashes.
//
// A file is read with one sequential pass into one buffer; tensors alias that buffer where their offsets are
// aligned to their element size (the common case: an offset is misaligned only after a tensor of an odd
// number of bytes), so a 500 MB file costs one copy from the page cache and no second copy into tensors.
// Misaligned tensors are copied.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "haliax/state_dict.h"
#include "levanter/checkpoint/error.h"

namespace levanter::checkpoint {

// Files hold a state dict (haliax/state_dict.h): named CPU tensors in a fixed order; non-contiguous ones are
// written contiguously.
using haliax::StateDict;
// The optional "__metadata__" map (string to string, as the format requires).
using StringMap = std::map<std::string, std::string>;

struct SafetensorsFile {
  StateDict tensors;
  StringMap metadata;
};

// "F32", "BF16", ... for the ten dtypes we support (F32, BF16, F16, F64, I64, I32, I16, I8, U8, BOOL).
// Throws CheckpointError for any other ScalarType / name.
std::string safetensors_dtype_name(at::ScalarType dtype);
at::ScalarType safetensors_dtype(const std::string& name);

// The serialized header: 8-byte length, then the padded JSON. `data_size` receives the data section's size.
std::string safetensors_header(const StateDict& tensors, const StringMap& metadata = {}, uint64_t* data_size = nullptr);

// Writes `path` atomically (a temporary file beside it, fsync, rename, fsync of the directory).
void save_safetensors(const std::string& path, const StateDict& tensors, const StringMap& metadata = {});

// Reads and validates a whole file.
SafetensorsFile load_safetensors(const std::string& path);

// Parses a file already in memory (`name` is used in messages). The tensors own copies of the bytes.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name);

}  // namespace levanter::checkpoint
