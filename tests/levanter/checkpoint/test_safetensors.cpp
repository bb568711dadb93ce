// Safetensors: exact layout, every dtype, validation of corrupt files, and interop with an independent numpy
// parser/writer and (when a venv can be made) Hugging Face's own `safetensors` library.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <nlohmann/json.hpp>
#include <random>

#include "levanter/checkpoint/checkpoint_testing.h"
#include "levanter/checkpoint/safetensors.h"

using namespace levanter::checkpoint;
using namespace levanter::checkpoint::testing;
using ::testing::HasSubstr;
using json = nlohmann::ordered_json;

namespace {

uint32_t crc_of(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return static_cast<uint32_t>(
      crc32_z(0, static_cast<const unsigned char*>(c.data_ptr()), c.numel() * c.element_size()));
}

// What the C++ side expects safetensors_ref.py to report about `tensors`.
void expect_description_matches(const json& d, const StateDict& tensors) {
  std::vector<std::string> order;
  for (const auto& [name, _] : tensors) order.push_back(name);
  EXPECT_EQ(d["order"].get<std::vector<std::string>>(), order);
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    const json& e = d["tensors"][name];
    EXPECT_EQ(e["dtype"].get<std::string>(), safetensors_dtype_name(t.scalar_type()));
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.sizes().vec());
    EXPECT_EQ(e["crc32"].get<uint32_t>(), crc_of(t));
    // Values as numpy decoded them (BF16 from its bits), compared with ATen's reading of the same bytes.
    at::Tensor flat = t.reshape({-1});
    ASSERT_TRUE(e["values"].is_array());
    ASSERT_EQ(e["values"].size(), static_cast<size_t>(flat.numel()));
    for (int64_t i = 0; i < flat.numel(); ++i) {
      if (at::isFloatingType(t.scalar_type())) {
        EXPECT_EQ(e["values"][i].get<double>(), flat[i].item<double>()) << "element " << i;
      } else {
        EXPECT_EQ(e["values"][i].get<int64_t>(), flat[i].item<int64_t>()) << "element " << i;
      }
    }
  }
}

// The tensors safetensors_ref.py writes (reference_tensors() there), built independently here.
StateDict python_reference() {
  StateDict t;
  t.emplace_back("py.f32", at::arange(6, at::kFloat).reshape({2, 3}) * 0.5 - 1);
  t.emplace_back("py.bf16", at::tensor({1.0, -2.5, 3.140625}).to(at::kBFloat16));
  t.emplace_back("py.f16", at::tensor({0.5, -1.0, 65504.0}).to(at::kHalf));
  t.emplace_back("py.f64", at::tensor({1.0 / 3.0, -1e300}, at::kDouble));
  t.emplace_back(
      "py.i64",
      at::tensor({std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), int64_t{0}}, at::kLong));
  t.emplace_back("py.i32", at::tensor({-7, 2147483647}, at::kInt).reshape({2, 1}));
  t.emplace_back("py.i16", at::tensor({-32768, 12345}, at::kShort));
  t.emplace_back("py.i8", at::tensor({-128, 127, 0}, at::kChar));
  t.emplace_back("py.u8", at::tensor({0, 255, 7}, at::kByte));
  t.emplace_back("py.bool", at::tensor({1, 0, 1}).to(at::kBool));
  t.emplace_back("py.scalar", at::scalar_tensor(42.0, at::kFloat));
  t.emplace_back("py.empty", at::zeros({0, 4}));
  return t;
}

// A file with one tensor "a" (F32 [2]) whose header is `header_json` (unpadded) and data `data`.
std::string raw_file(const std::string& header_json, const std::string& data) {
  std::string h = header_json;
  h.append((8 - h.size() % 8) % 8, ' ');
  uint64_t n = h.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + h + data;
}

std::string error_of(const std::string& bytes, const std::string& name = "bad.safetensors") {
  try {
    parse_safetensors(bytes, name);
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeInOrder) {
  TempDir dir;
  StateDict tensors = every_dtype();
  save_safetensors(dir / "x.safetensors", tensors, {{"format", "pt"}, {"note", "ünïcode"}});
  SafetensorsFile f = load_safetensors(dir / "x.safetensors");
  expect_same_tensors(f.tensors, tensors);
  EXPECT_EQ(f.metadata, (StringMap{{"format", "pt"}, {"note", "ünïcode"}}));
  // Loaded tensors are ordinary tensors: usable after the file is gone, writable independently.
  fs::remove(dir / "x.safetensors");
  f.tensors[0].second.add_(1);
  EXPECT_TRUE(at::equal(f.tensors[0].second, tensors[0].second + 1));
  EXPECT_TRUE(at::equal(f.tensors[3].second, tensors[3].second));  // f64 at an unaligned offset: copied
  EXPECT_FALSE(fs::exists(dir / ("x.safetensors.tmp-" + std::to_string(::getpid()))));
}

TEST(Safetensors, HeaderLayoutIsExact) {
  StateDict tensors;
  tensors.emplace_back("z.last_alphabetically", at::ones({2, 2}));
  tensors.emplace_back("a.bf16", at::ones({3}, at::kBFloat16));
  tensors.emplace_back("m.scalar", at::scalar_tensor(1, at::kLong));
  uint64_t data_size = 0;
  std::string header = safetensors_header(tensors, {{"k", "v"}}, &data_size);
  EXPECT_EQ(data_size, 16u + 6u + 8u);
  uint64_t n;
  std::memcpy(&n, header.data(), 8);
  ASSERT_EQ(n + 8, header.size());
  EXPECT_EQ(n % 8, 0u);  // so the data section starts 8-aligned
  std::string text = header.substr(8);
  std::string trimmed = text.substr(0, text.find_last_not_of(' ') + 1);
  EXPECT_LT(text.size() - trimmed.size(), 8u);
  EXPECT_EQ(trimmed,
            R"({"__metadata__":{"k":"v"},"z.last_alphabetically":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
            R"("a.bf16":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},)"
            R"("m.scalar":{"dtype":"I64","shape":[],"data_offsets":[22,30]}})");
  // The file is the header followed by the raw little-endian bytes.
  TempDir dir;
  save_safetensors(dir / "x.safetensors", tensors, {{"k", "v"}});
  std::string bytes = read_bytes(dir / "x.safetensors");
  ASSERT_EQ(bytes.size(), header.size() + data_size);
  EXPECT_EQ(bytes.substr(0, header.size()), header);
  float one = 1.0f;
  EXPECT_EQ(0, std::memcmp(bytes.data() + header.size(), &one, 4));
  EXPECT_EQ(static_cast<unsigned char>(bytes[header.size() + 16]), 0x80);  // bf16 1.0 = 0x3f80, little-endian
  EXPECT_EQ(static_cast<unsigned char>(bytes[header.size() + 17]), 0x3f);
}

TEST(Safetensors, RefusesWhatItCannotWrite) {
  TempDir dir;
  auto error = [&](StateDict t) {
    try {
      save_safetensors(dir / "x.safetensors", t);
    } catch (const CheckpointError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_THAT(error({{"c", at::zeros({2}, at::kComplexFloat)}}), HasSubstr("cannot be stored"));
  EXPECT_THAT(error({{"a", at::zeros({2})}, {"a", at::zeros({2})}}), HasSubstr("'a' appears twice"));
  EXPECT_THAT(error({{"__metadata__", at::zeros({2})}}), HasSubstr("reserved"));
  EXPECT_THAT(error({{"", at::zeros({2})}}), HasSubstr("empty name"));
  EXPECT_THAT(error({{"u", at::Tensor()}}), HasSubstr("'u' is undefined"));
  EXPECT_THAT(error({{"bad\xff", at::zeros({1})}}), HasSubstr("UTF-8"));
  // A failed save leaves the previous file as it was, and no temporary file.
  save_safetensors(dir / "x.safetensors", {{"ok", at::ones({1})}});
  EXPECT_THAT(error({{"ok", at::ones({1})}, {"c", at::zeros({1}, at::kComplexDouble)}}), HasSubstr("cannot be stored"));
  EXPECT_TRUE(at::equal(load_safetensors(dir / "x.safetensors").tensors.at(0).second, at::ones({1})));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator()), 1);
}

TEST(Safetensors, CorruptFilesAreRejectedNamingFileAndTensor) {
  const std::string eight(8, '\0');
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_EQ(error_of(raw_file(ok_header, eight)), "(no error)");

  EXPECT_THAT(error_of("abc"), HasSubstr("bad.safetensors: 3 bytes, too short"));
  std::string huge = raw_file(ok_header, eight);
  uint64_t big = uint64_t(1) << 40;
  std::memcpy(huge.data(), &big, 8);
  EXPECT_THAT(error_of(huge), HasSubstr("exceeds"));
  EXPECT_THAT(error_of(raw_file(ok_header, eight).substr(0, 20)), HasSubstr("exceeds"));
  EXPECT_THAT(error_of(raw_file(R"({"a":)", "")), HasSubstr("not valid JSON"));
  EXPECT_THAT(error_of(raw_file(R"([1,2])", "")), HasSubstr("does not start with '{'"));
  EXPECT_THAT(error_of(raw_file(ok_header, std::string(4, '\0'))),
              HasSubstr("bad.safetensors: tensor 'a': data_offsets end at byte 8 but the data section has 4 bytes"));
  EXPECT_THAT(error_of(raw_file(ok_header, std::string(12, '\0'))), HasSubstr("4 bytes after the last tensor"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight)),
              HasSubstr("tensor 'a': holds 8 bytes, but F32 [3] needs 3 x 4 bytes"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", eight)),
              HasSubstr("tensor 'a': unsupported dtype 'F8_E4M3'"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight)),
              HasSubstr("non-negative"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight)),
              HasSubstr("begin after they end"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", eight)), HasSubstr("missing 'data_offsets'"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", eight)),
              HasSubstr("unknown key 'x'"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                eight)),
              HasSubstr("tensor 'b': data_offsets [4, 8) overlap"));
  EXPECT_THAT(error_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight)),
              HasSubstr("gap of 4"));
  EXPECT_THAT(
      error_of(raw_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", eight)),
      HasSubstr("too many elements"));
  EXPECT_THAT(
      error_of(raw_file(R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight)),
      HasSubstr("__metadata__['k'] is not a string"));
  EXPECT_THAT(
      error_of(raw_file(R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\x01\x02", 2))),
      HasSubstr("BOOL element 1 is 2"));
  EXPECT_THAT(error_of(raw_file("{\"a\xff\":1}", "")), HasSubstr("not valid JSON"));
}

TEST(Safetensors, TruncatedOrBitFlippedFilesNeverCrash) {
  TempDir dir;
  save_safetensors(dir / "x.safetensors", every_dtype(), {{"format", "pt"}});
  const std::string good = read_bytes(dir / "x.safetensors");
  // Every truncation is an error (the tensors tile the data section exactly, so nothing short of it parses).
  for (size_t len = 0; len < good.size(); ++len) {
    EXPECT_THAT(error_of(good.substr(0, len), "cut.safetensors"), HasSubstr("cut.safetensors")) << "length " << len;
  }
  // Random corruption: each attempt parses or throws CheckpointError; nothing else (no crash, no other type).
  std::mt19937 rng(1234);
  uint64_t header_end;
  std::memcpy(&header_end, good.data(), 8);
  header_end += 8;
  int parsed = 0, rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bad = good;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t pos = rng() % (i % 2 ? header_end : bad.size());  // half the time aim at the header
      bad[pos] = static_cast<char>(i % 3 == 0 ? (bad[pos] ^ (1 << (rng() % 8))) : static_cast<char>(rng()));
    }
    try {
      SafetensorsFile f = parse_safetensors(bad, "fuzz.safetensors");
      for (auto& [n, t] : f.tensors) t.sum();  // touch every element
      ++parsed;
    } catch (const CheckpointError& e) {
      EXPECT_THAT(e.what(), HasSubstr("fuzz.safetensors"));
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);
  EXPECT_GT(parsed, 100);  // flips in tensor data are not the format's business (checkpoints have checksums)
}

TEST(Safetensors, IndependentNumpyParserReadsOurFiles) {
  const std::string py = numpy_python();
  ASSERT_FALSE(py.empty()) << "no python3 with numpy: install python3-numpy (scripts/setup does)";
  TempDir dir;
  StateDict tensors = every_dtype();
  save_safetensors(dir / "ours.safetensors", tensors, {{"format", "pt"}});
  CommandResult r = run_command(py + " " + quote(ref_script()) + " describe " + quote(dir / "ours.safetensors"));
  ASSERT_EQ(r.status, 0) << r.out;
  json d = json::parse(r.out);
  EXPECT_EQ(d["metadata"], json({{"format", "pt"}}));
  expect_description_matches(d, tensors);
}

TEST(Safetensors, ReadsFilesWrittenByAnIndependentNumpyWriter) {
  const std::string py = numpy_python();
  ASSERT_FALSE(py.empty()) << "no python3 with numpy: install python3-numpy (scripts/setup does)";
  TempDir dir;
  CommandResult r = run_command(py + " " + quote(ref_script()) + " write " + quote(dir / "py.safetensors"));
  ASSERT_EQ(r.status, 0) << r.out;
  SafetensorsFile f = load_safetensors(dir / "py.safetensors");
  expect_same_tensors(f.tensors, python_reference());
  EXPECT_EQ(f.metadata.at("writer"), "safetensors_ref.py");
}

TEST(Safetensors, HuggingFaceSafetensorsReadsOurFiles) {
  std::string why;
  const std::string py = safetensors_python(&why);
  if (py.empty()) GTEST_SKIP() << "Hugging Face safetensors unavailable: " << why;
  TempDir dir;
  StateDict tensors = every_dtype();
  save_safetensors(dir / "ours.safetensors", tensors, {{"format", "pt"}});
  CommandResult r =
      run_command(quote(py) + " " + quote(ref_script()) + " st-describe " + quote(dir / "ours.safetensors"));
  ASSERT_EQ(r.status, 0) << r.out;
  json d = json::parse(r.out);
  EXPECT_EQ(d["metadata"], json({{"format", "pt"}}));
  expect_description_matches(d, tensors);
}

TEST(Safetensors, ReadsFilesWrittenByHuggingFaceSafetensors) {
  std::string why;
  const std::string py = safetensors_python(&why);
  if (py.empty()) GTEST_SKIP() << "Hugging Face safetensors unavailable: " << why;
  TempDir dir;
  CommandResult r = run_command(quote(py) + " " + quote(ref_script()) + " st-write " + quote(dir / "hf.safetensors"));
  ASSERT_EQ(r.status, 0) << r.out;
  SafetensorsFile f = load_safetensors(dir / "hf.safetensors");
  EXPECT_EQ(f.metadata.at("writer"), "safetensors");
  // Their writer orders tensors its own way (by dtype alignment, then name); compare by name.
  StateDict expected = python_reference();
  ASSERT_EQ(f.tensors.size(), expected.size());
  for (const auto& [name, t] : expected) {
    auto it = std::find_if(f.tensors.begin(), f.tensors.end(), [&](const auto& p) { return p.first == name; });
    ASSERT_NE(it, f.tensors.end()) << name;
    expect_same_tensors({*it}, {{name, t}});
  }
}
