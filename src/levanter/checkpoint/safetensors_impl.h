// Internals shared by safetensors.cpp and checkpoint.cpp: streaming a file out through ExclusiveFile (so the
// checkpoint writer gets its CRC and can inject faults mid-write), and parsing a buffer that tensors alias.
#pragma once

#include <functional>
#include <memory>

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

}  // namespace levanter::checkpoint::detail
