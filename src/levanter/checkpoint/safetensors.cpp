#include "levanter/checkpoint/safetensors.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "levanter/checkpoint/safetensors_impl.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data are little-endian; this implementation copies bytes as they are in memory"
#endif

namespace levanter::checkpoint {
namespace {

using ordered_json = nlohmann::ordered_json;

// The reference implementation's limit: a larger header is a corrupt length, not a real file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Progress (and fault injection) granularity while streaming tensor bytes.
constexpr size_t kWriteChunk = size_t(8) << 20;

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {at::kFloat, "F32"}, {at::kBFloat16, "BF16"}, {at::kHalf, "F16"}, {at::kDouble, "F64"}, {at::kLong, "I64"},
    {at::kInt, "I32"},   {at::kShort, "I16"},     {at::kChar, "I8"},  {at::kByte, "U8"},    {at::kBool, "BOOL"},
};

std::string tensor_where(const std::string& file, const std::string& tensor) {
  return file + ": tensor '" + tensor + "': ";
}

// The tensor as it will be written: CPU, strided, contiguous.
at::Tensor prepared(const std::string& name, const at::Tensor& t) {
  if (!t.defined()) throw CheckpointError("tensor '" + name + "' is undefined");
  if (t.layout() != at::kStrided) throw CheckpointError("tensor '" + name + "' is not a dense (strided) tensor");
  safetensors_dtype_name(t.scalar_type());  // throws for unsupported dtypes
  try {
    return t.detach().cpu().contiguous();
  } catch (const std::exception& e) {
    throw CheckpointError("tensor '" + name + "': cannot bring it to contiguous CPU memory: " + e.what());
  }
}

uint64_t nbytes_of(const at::Tensor& t) { return static_cast<uint64_t>(t.numel()) * t.element_size(); }

void check_name(const std::string& name, std::set<std::string>& seen) {
  if (name.empty()) throw CheckpointError("a tensor has an empty name");
  if (name == "__metadata__") throw CheckpointError("'__metadata__' is reserved and cannot name a tensor");
  if (!seen.insert(name).second) throw CheckpointError("tensor name '" + name + "' appears twice");
}

std::string build_header(const StateDict& tensors, const std::vector<at::Tensor>& data, const StringMap& metadata,
                         uint64_t* data_size) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json m = ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = data[i];
    uint64_t n = nbytes_of(t);
    ordered_json entry = ordered_json::object();
    entry["dtype"] = safetensors_dtype_name(t.scalar_type());
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + n};
    header[tensors[i].first] = std::move(entry);
    offset += n;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(std::string("cannot encode the header (tensor and metadata names must be UTF-8): ") +
                          e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t len = text.size();
  std::memcpy(out.data(), &len, 8);
  out += text;
  if (data_size) *data_size = offset;
  return out;
}

std::vector<at::Tensor> prepare_all(const StateDict& tensors) {
  std::set<std::string> seen;
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    check_name(name, seen);
    out.push_back(prepared(name, t));
  }
  return out;
}

// --- reading -------------------------------------------------------------------------------------------------

using detail::TensorEntry;

uint64_t as_u64(const ordered_json& v, const std::string& where, const char* what) {
  if (!v.is_number_unsigned()) throw CheckpointError(where + what + " must be a non-negative integer, got " + v.dump());
  return v.get<uint64_t>();
}

TensorEntry parse_entry(const std::string& file, const std::string& name, const ordered_json& v, uint64_t data_size) {
  std::string where = tensor_where(file, name);
  if (!v.is_object()) throw CheckpointError(where + "expected an object with dtype, shape and data_offsets");
  for (const auto& [k, _] : v.items()) {
    if (k != "dtype" && k != "shape" && k != "data_offsets") throw CheckpointError(where + "unknown key '" + k + "'");
  }
  for (const char* k : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(k)) throw CheckpointError(where + "missing '" + k + "'");
  }
  TensorEntry e;
  e.name = name;
  if (!v["dtype"].is_string()) throw CheckpointError(where + "dtype must be a string");
  try {
    e.dtype = safetensors_dtype(v["dtype"].get<std::string>());
  } catch (const CheckpointError& err) {
    throw CheckpointError(where + err.what());
  }
  const ordered_json& shape = v["shape"];
  if (!shape.is_array()) throw CheckpointError(where + "shape must be a list of integers");
  uint64_t numel = 1;
  for (const auto& d : shape) {
    uint64_t dim = as_u64(d, where, "each dimension");
    if (dim > static_cast<uint64_t>(INT64_MAX)) throw CheckpointError(where + "dimension too large");
    if (__builtin_mul_overflow(numel, dim, &numel)) throw CheckpointError(where + "shape has too many elements");
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  const ordered_json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2) throw CheckpointError(where + "data_offsets must be [begin, end]");
  e.begin = as_u64(off[0], where, "data_offsets[0]");
  e.end = as_u64(off[1], where, "data_offsets[1]");
  if (e.begin > e.end) throw CheckpointError(where + "data_offsets begin after they end");
  if (e.end > data_size) {
    throw CheckpointError(where + "data_offsets end at byte " + std::to_string(e.end) + " but the data section has " +
                          std::to_string(data_size) + " bytes (truncated file?)");
  }
  uint64_t expect;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(e.dtype)), &expect) ||
      expect != e.end - e.begin) {
    throw CheckpointError(where + "holds " + std::to_string(e.end - e.begin) + " bytes, but " +
                          v["dtype"].get<std::string>() + " " + shape.dump() + " needs " + std::to_string(numel) +
                          " x " + std::to_string(c10::elementSize(e.dtype)) + " bytes");
  }
  return e;
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes) {
    if (d.type == dtype) return d.name;
  }
  throw CheckpointError(std::string("dtype ") + c10::toString(dtype) +
                        " cannot be stored (supported: F32, BF16, F16, F64, I64, I32, I16, I8, U8, BOOL)");
}

at::ScalarType safetensors_dtype(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return d.type;
  }
  throw CheckpointError("unsupported dtype '" + name +
                        "' (supported: F32, BF16, F16, F64, I64, I32, I16, I8, U8, BOOL)");
}

std::string safetensors_header(const StateDict& tensors, const StringMap& metadata, uint64_t* data_size) {
  return build_header(tensors, prepare_all(tensors), metadata, data_size);
}

namespace detail {

uint32_t write_safetensors(runtime::ExclusiveFile& out, const StateDict& tensors, const StringMap& metadata,
                           const WriteProgress& progress) {
  std::vector<at::Tensor> data = prepare_all(tensors);
  uint64_t total = 0;
  std::string header = build_header(tensors, data, metadata, &total);
  runtime::BackgroundCrc::Segments segments{{header.data(), header.size()}};
  for (const at::Tensor& t : data) segments.emplace_back(static_cast<const char*>(t.data_ptr()), nbytes_of(t));
  runtime::BackgroundCrc crc(std::move(segments));
  crc.available(header.size() + total);  // everything is in memory already
  out.write(header.data(), header.size());
  uint64_t done = 0;
  for (const at::Tensor& t : data) {
    const char* p = static_cast<const char*>(t.data_ptr());
    uint64_t n = nbytes_of(t);
    for (uint64_t pos = 0; pos < n; pos += kWriteChunk) {
      size_t piece = static_cast<size_t>(std::min<uint64_t>(kWriteChunk, n - pos));
      out.write(p + pos, piece);
      done += piece;
      if (progress) progress(done, total);
    }
  }
  return crc.finish();
}

uint64_t header_length(const char* first, uint64_t size, const std::string& file) {
  if (size < 8) {
    throw CheckpointError(file + ": " + std::to_string(size) + " bytes, too short for a safetensors file (truncated?)");
  }
  uint64_t n;
  std::memcpy(&n, first, 8);
  if (n > size - 8) {
    throw CheckpointError(file + ": header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
                          " bytes after it (truncated or not a safetensors file)");
  }
  if (n > kMaxHeaderBytes) throw CheckpointError(file + ": header length " + std::to_string(n) + " is not plausible");
  if (n < 2) throw CheckpointError(file + ": header length " + std::to_string(n) + " is too short for a JSON object");
  return n;
}

SafetensorsLayout parse_layout(const char* bytes, uint64_t size, const std::string& file) {
  const uint64_t n = header_length(bytes, size, file);
  const char* json_begin = bytes + 8;
  if (*json_begin != '{')
    throw CheckpointError(file + ": the header does not start with '{' (not a safetensors file?)");

  ordered_json header;
  try {
    header = ordered_json::parse(json_begin, json_begin + n);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(file + ": the header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw CheckpointError(file + ": the header is not a JSON object");

  SafetensorsLayout out;
  out.data_start = 8 + n;
  const uint64_t data_size = size - out.data_start;
  std::vector<TensorEntry>& entries = out.entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw CheckpointError(file + ": __metadata__ must be an object of strings");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) throw CheckpointError(file + ": __metadata__['" + mk + "'] is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(file, key, value, data_size));
  }

  // Data order; the tensors must tile the data section exactly.
  std::stable_sort(entries.begin(), entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t expected = 0;
  for (const TensorEntry& e : entries) {
    if (e.begin < expected) {
      throw CheckpointError(tensor_where(file, e.name) + "data_offsets [" + std::to_string(e.begin) + ", " +
                            std::to_string(e.end) + ") overlap the previous tensor");
    }
    if (e.begin > expected) {
      throw CheckpointError(tensor_where(file, e.name) + "a gap of " + std::to_string(e.begin - expected) +
                            " unclaimed bytes precedes this tensor");
    }
    expected = e.end;
  }
  if (expected != data_size) {
    throw CheckpointError(file + ": " + std::to_string(data_size - expected) +
                          " bytes after the last tensor belong to no tensor");
  }
  return out;
}

void check_bool_bytes(const char* p, size_t nbytes, const std::string& file, const std::string& name) {
  for (size_t i = 0; i < nbytes; ++i) {
    if (static_cast<unsigned char>(p[i]) > 1) {
      throw CheckpointError(tensor_where(file, name) + "BOOL element " + std::to_string(i) + " is " +
                            std::to_string(static_cast<unsigned char>(p[i])) + ", not 0 or 1");
    }
  }
}

SafetensorsFile parse_safetensors(const std::shared_ptr<runtime::Buffer>& buffer, const std::string& file) {
  SafetensorsLayout layout = parse_layout(buffer->data(), buffer->size(), file);
  const uint64_t data_start = layout.data_start;
  const std::vector<TensorEntry>& entries = layout.entries;
  SafetensorsFile out;
  out.metadata = std::move(layout.metadata);
  out.tensors.reserve(entries.size());
  for (const TensorEntry& e : entries) {
    char* p = buffer->data() + data_start + e.begin;
    const size_t nbytes = e.end - e.begin;
    const auto options = at::TensorOptions().dtype(e.dtype);
    if (e.dtype == at::kBool) check_bool_bytes(p, nbytes, file, e.name);
    at::Tensor t;
    if (nbytes == 0 || reinterpret_cast<uintptr_t>(p) % c10::elementSize(e.dtype) != 0) {
      // Empty, or misaligned (possible in files from other writers): own a copy.
      t = at::empty(e.shape, options);
      if (nbytes) std::memcpy(t.data_ptr(), p, nbytes);
    } else {
      std::shared_ptr<runtime::Buffer> keep = buffer;
      t = at::from_blob(
          p, e.shape, [keep](void*) mutable { keep.reset(); }, options);
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

SafetensorsLayout read_layout(const runtime::File& f, uint64_t size) {
  char first[8] = {};
  if (size >= 8) f.read_exact_at(first, 8, 0);
  const uint64_t n = header_length(first, size, f.path());
  std::string bytes(static_cast<size_t>(8 + n), '\0');
  f.read_exact_at(bytes.data(), bytes.size(), 0);
  return parse_layout(bytes.data(), size, f.path());
}

}  // namespace detail

void save_safetensors(const std::string& path, const StateDict& tensors, const StringMap& metadata) {
  try {
    runtime::AtomicFile out(path);
    detail::write_safetensors(out.file(), tensors, metadata);
    out.commit();
  } catch (const runtime::IoError& e) {
    throw CheckpointError(e.what());  // names the file (or its temporary)
  } catch (const CheckpointError& e) {
    std::string msg = e.what();
    if (msg.rfind(path, 0) == 0) throw;
    throw CheckpointError(path + ": " + msg);
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  return detail::parse_safetensors(
      runtime::rethrow_io_errors_as<CheckpointError>([&] { return runtime::read_file(path); }), path);
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name) {
  auto buffer = std::make_shared<runtime::Buffer>(bytes.size());
  if (!bytes.empty()) std::memcpy(buffer->data(), bytes.data(), bytes.size());
  SafetensorsFile f = detail::parse_safetensors(buffer, name);
  return f;
}

}  // namespace levanter::checkpoint
