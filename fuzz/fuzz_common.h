// What the four fuzz targets share: a scratch directory for entry points that take a path, splitting one input
// into parts, and the rule for exceptions.
//
// The rule: a parser given bad bytes must throw the project's own error type for that input (ConfigError,
// TokenizerError, DataError, CheckpointError), whose message names the file. Anything else that escapes — a
// library's exception (YAML::Exception, nlohmann::json::exception, c10::Error, std::out_of_range from an
// unchecked .at(), std::bad_alloc from a size read from the input) — reaches the user as a message that names
// nothing, so it is a finding: `unexpected` prints it and aborts, and libFuzzer keeps the input as a crash.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

namespace levanter::fuzz {

// One directory per process (libFuzzer's -fork/-jobs workers each get their own), removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/levanter-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string path;
    path = tmpl;
    std::atexit([] { std::system(("rm -rf '" + path + "'").c_str()); });
    return path;
  }();
  return dir;
}

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::perror(path.c_str());
    std::abort();
  }
}

// The input cut at each NUL byte (text formats cannot hold one, so it is a free separator); always >= 1 part.
inline std::vector<std::string_view> split_nul(std::string_view data) {
  std::vector<std::string_view> parts;
  size_t begin = 0;
  for (size_t i = 0; i <= data.size(); ++i) {
    if (i == data.size() || data[i] == '\0') {
      parts.push_back(data.substr(begin, i - begin));
      begin = i + 1;
    }
  }
  return parts;
}

// LEVANTER_FUZZ_VERBOSE=1: print each expected error (to see what a corpus file exercises: run the target on it).
inline void expected(const std::exception& e) {
  static const bool verbose = std::getenv("LEVANTER_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "expected error: %s\n", e.what());
}

// A non-project exception escaped: report it with its type and abort (a libFuzzer crash with this input).
[[noreturn]] inline void unexpected(const std::exception& e) {
  std::fprintf(stderr, "\nFINDING: %s escaped the parser: %s\n", typeid(e).name(), e.what());
  std::abort();
}

// An invariant of a successful parse does not hold.
#define LEVANTER_FUZZ_CHECK(cond)                                                                \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "\nFINDING: check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                              \
    }                                                                                            \
  } while (0)

}  // namespace levanter::fuzz
