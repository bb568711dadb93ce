// The safetensors reader: checkpoint::parse_safetensors (load_safetensors after reading the file): header length,
// JSON header, dtypes, shapes, offsets, tiling of the data section, BOOL values; then the tensors it returns.
//
// Input: the file's bytes. Expected: CheckpointError naming the file. Checked on every accepted file: each
// tensor's bytes are readable here (in instrumented code, so ASan sees a tensor that points outside the data) and
// writing the tensors back (safetensors_header + their bytes) parses to the same names, dtypes, shapes and bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "levanter/checkpoint/safetensors.h"

namespace {

using levanter::checkpoint::SafetensorsFile;

// A tensor's bytes, read one by one (not through ATen, which is not instrumented).
std::string bytes_of(const at::Tensor& t) {
  LEVANTER_FUZZ_CHECK(t.is_contiguous());
  const size_t n = t.numel() * t.element_size();
  std::string out(n, '\0');
  const auto* p = static_cast<const volatile char*>(t.data_ptr());
  for (size_t i = 0; i < n; ++i) out[i] = p[i];
  return out;
}

void check_round_trip(const SafetensorsFile& f) {
  using namespace levanter::checkpoint;
  std::string file = safetensors_header(f.tensors, f.metadata);
  for (const auto& [name, t] : f.tensors) file += bytes_of(t);
  const SafetensorsFile again = parse_safetensors(file, "fuzz/round-trip.safetensors");
  LEVANTER_FUZZ_CHECK(again.metadata == f.metadata);
  LEVANTER_FUZZ_CHECK(again.tensors.size() == f.tensors.size());
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const auto& [name, t] = f.tensors[i];
    const auto& [name2, t2] = again.tensors[i];
    LEVANTER_FUZZ_CHECK(name == name2);
    LEVANTER_FUZZ_CHECK(t.scalar_type() == t2.scalar_type());
    LEVANTER_FUZZ_CHECK(t.sizes() == t2.sizes());
    LEVANTER_FUZZ_CHECK(bytes_of(t) == bytes_of(t2));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace levanter;
  SafetensorsFile f;
  try {
    f = checkpoint::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), "fuzz/model.safetensors");
  } catch (const checkpoint::CheckpointError& e) {
    fuzz::expected(e);
    return 0;
  } catch (const std::exception& e) {
    fuzz::unexpected(e);
  }
  try {
    check_round_trip(f);
  } catch (const std::exception& e) {
    fuzz::unexpected(e);  // our own writer's output refused by our own reader
  }
  return 0;
}
