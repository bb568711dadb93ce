// Internals shared by safetensors.cpp and checkpoint.cpp: streaming a file out through ExclusiveFile (so the
// checkpoint writer gets its CRC and can inject faults mid-write), parsing a buffer that tensors alias, and reading a
// file's header alone (a process loading its pieces of a checkpoint reads only the bytes of its blocks).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "levanter/checkpoint/safetensors.h"
#include "levanter/runtime/file_io.h"

namespace levanter::checkpoint::detail {

// Called after each chunk of tensor data with (data bytes written so far, total data bytes).
using WriteProgress = std::function<void(uint64_t, uint64_t)>;

// Streams the file into `out` and returns the CRC32 of every byte written, computed on a second thread while
// this one writes (so `out` should be opened with checksum = false).
uint32_t write_safetensors(runtime::ExclusiveFile& out, const StateDict& tensors, const StringMap& metadata,
                           const WriteProgress& progress = {});

SafetensorsFile parse_safetensors(const std::shared_ptr<runtime::Buffer>& buffer, const std::string& name);

// One tensor's place in a file: offsets relative to the data section.
struct TensorEntry {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// A file's header: its tensors in data order (validated as parse_safetensors validates them) and where the data
// section starts.
struct SafetensorsLayout {
  std::vector<TensorEntry> entries;
  StringMap metadata;
  uint64_t data_start = 0;
};

// The header of `bytes` (at least the length and the header; `size`: the whole file's size).
SafetensorsLayout parse_layout(const char* bytes, uint64_t size, const std::string& name);
// The header of an open file of `size` bytes, read without its data.
SafetensorsLayout read_layout(const runtime::File& f, uint64_t size);
// CheckpointError naming the file and tensor unless every byte is 0 or 1 (BOOL data).
void check_bool_bytes(const char* p, size_t nbytes, const std::string& name, const std::string& tensor);

}  // namespace levanter::checkpoint::detail
