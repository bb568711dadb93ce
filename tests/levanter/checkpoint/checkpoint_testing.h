// Helpers for the checkpoint tests: scratch directories, subprocesses, Python interpreters, tensor equality.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "levanter/checkpoint/checkpoint.h"
#include "levanter/checkpoint/safetensors.h"
#include "levanter/temp_dir.h"

namespace levanter::checkpoint::testing {

namespace fs = std::filesystem;

using levanter::testing::TempDir;  // a fresh directory, removed when the test ends

struct CommandResult {
  int status = -1;  // exit code, or -1 if it did not exit normally
  std::string out;  // stdout (stderr goes to the test's stderr)
};

inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string ref_script() {
  return std::string(LEVANTER_SOURCE_DIR) + "/tests/levanter/checkpoint/safetensors_ref.py";
}

// A Python 3 with numpy (Debian's python3-numpy, which scripts/setup installs), or "".
inline std::string numpy_python() {
#ifdef LEVANTER_PYTHON
  const char* configured = LEVANTER_PYTHON;
#else
  const char* configured = "/usr/bin/python3";
#endif
  for (const char* py : {configured, "/usr/bin/python3", "python3"}) {
    if (run_command(std::string(py) + " -c 'import numpy' 2>/dev/null").status == 0) return py;
  }
  return "";
}

// A Python with Hugging Face's `safetensors` (and Debian's torch): a venv under the build directory, created
// on first use with pip (PyPI). "" if that is not possible here; `why` then says why. Set
// LEVANTER_NO_PIP=1 to never try.
inline std::string safetensors_python_uncached(std::string* why) {
  const std::string dir = std::string(LEVANTER_BINARY_DIR) + "/test-venv-safetensors";
  const std::string py = dir + "/bin/python";
  const std::string probe = " -c 'import safetensors, numpy' 2>/dev/null";
  if (fs::exists(py) && run_command(quote(py) + probe).status == 0) return py;
  if (const char* no = std::getenv("LEVANTER_NO_PIP"); no && *no && std::string(no) != "0") {
    *why = "LEVANTER_NO_PIP is set, so no venv with Hugging Face's safetensors is created";
    return "";
  }
  // One creator at a time (ctest may run tests in parallel); a failed attempt is remembered.
  fs::create_directories(LEVANTER_BINARY_DIR);
  const std::string lock_path = dir + ".lock";
  int fd = ::open(lock_path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (fd >= 0) ::flock(fd, LOCK_EX);
  std::string result;
  const std::string failed = dir + ".failed";
  if (fs::exists(py) && run_command(quote(py) + probe).status == 0) {
    result = py;
  } else if (fs::exists(failed)) {
    *why = "an earlier attempt to pip install safetensors into " + dir + " failed (see " + failed +
           "; delete it to retry)";
  } else {
    std::fprintf(stderr, "[ creating %s with pip install safetensors (once per build directory) ]\n", dir.c_str());
    std::string cmd = "rm -rf " + quote(dir) + " && timeout 300 /usr/bin/python3 -m venv --system-site-packages " +
                      quote(dir) + " >" + quote(failed + ".log") + " 2>&1 && timeout 300 " + quote(dir + "/bin/pip") +
                      " install -q --disable-pip-version-check safetensors >>" + quote(failed + ".log") + " 2>&1";
    if (run_command(cmd).status == 0 && run_command(quote(py) + probe).status == 0) {
      fs::remove(failed + ".log");
      result = py;
    } else {
      fs::rename(failed + ".log", failed);
      *why = "could not create a venv with pip install safetensors (no network or no python3-venv?); see " + failed;
    }
  }
  if (fd >= 0) ::close(fd);
  return result;
}

inline std::string safetensors_python(std::string* why) {
  static std::string why_not;
  static const std::string py = safetensors_python_uncached(&why_not);
  *why = why_not;
  return py;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

// Same names in the same order, same dtypes and shapes, same bytes.
inline void expect_same_tensors(const StateDict& a, const StateDict& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].first);
    EXPECT_EQ(a[i].first, b[i].first);
    const at::Tensor x = a[i].second.contiguous(), y = b[i].second.contiguous();
    EXPECT_EQ(x.scalar_type(), y.scalar_type());
    EXPECT_EQ(x.sizes(), y.sizes());
    // An empty tensor's data_ptr() may be null, and memcmp's arguments must not be even for 0 bytes.
    if (x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() && x.numel() > 0) {
      EXPECT_EQ(0, std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()));
    }
  }
}

// One tensor of every supported dtype, plus a scalar, an empty tensor and a non-contiguous view.
inline StateDict every_dtype() {
  at::manual_seed(0);
  StateDict t;
  t.emplace_back("f32", at::randn({3, 5}));
  t.emplace_back("bf16", at::randn({7}).to(at::kBFloat16));  // odd byte count: later offsets are not 4-aligned
  t.emplace_back("f16", at::randn({2, 3}).to(at::kHalf));
  t.emplace_back("f64", at::randn({4}, at::kDouble));
  t.emplace_back("i64", at::arange(-3, 3, at::kLong));
  t.emplace_back("i32", at::arange(0, 6, at::kInt).reshape({2, 3}));
  t.emplace_back("i16", at::tensor({-32768, 0, 32767}, at::kShort));
  t.emplace_back("i8", at::tensor({-128, 5, 127}, at::kChar));
  t.emplace_back("u8", at::tensor({0, 200, 255}, at::kByte));
  t.emplace_back("bool", at::tensor({1, 0, 1}).to(at::kBool));
  t.emplace_back("scalar", at::scalar_tensor(2.5));
  t.emplace_back("empty", at::zeros({0, 3}));
  t.emplace_back("transposed", at::arange(12, at::kFloat).reshape({3, 4}).t());
  return t;
}

}  // namespace levanter::checkpoint::testing
