#include "levanter/data/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "levanter/runtime/file_io.h"

namespace levanter::data {

namespace {

std::string errno_text() { return std::strerror(errno); }

bool has_magic(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

class LocalInputStream : public InputStream {
 public:
  explicit LocalInputStream(const std::string& path)
      : file_(runtime::rethrow_io_errors_as<DataError>([&] { return runtime::File::open(path, O_RDONLY); })) {
    struct stat st;
    if (::fstat(file_.fd(), &st) == 0 && S_ISDIR(st.st_mode))
      throw DataError(path + ": is a directory, not a data file");
  }
  size_t read(char* buf, size_t n) override {
    return runtime::rethrow_io_errors_as<DataError>([&] { return file_.read_some(buf, n); });
  }

 private:
  runtime::File file_;
};

// Splits "a/b/*.gz" into components; keeps a leading "/" as the root.
std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : p) {
    if (c == '/') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  if (dir == "/") return "/" + name;
  return dir + "/" + name;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.empty() ? "." : p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (!d) return names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// Matches components[i..] under `dir`, appending whole matches to `out`.
void glob_walk(const std::string& dir, const std::vector<std::string>& comps, size_t i, std::vector<std::string>& out) {
  if (i == comps.size()) {
    if (exists(dir.empty() ? "." : dir)) out.push_back(dir);
    return;
  }
  const std::string& c = comps[i];
  if (c == "**") {
    // Zero directories, then every (non-hidden) subdirectory, recursively.
    glob_walk(dir, comps, i + 1, out);
    for (const std::string& n : list_dir(dir)) {
      std::string p = join(dir, n);
      if (n[0] != '.' && is_dir(p)) glob_walk(p, comps, i, out);
    }
    return;
  }
  if (!has_magic(c)) {
    std::string p = join(dir, c);
    if (i + 1 == comps.size() ? exists(p) : is_dir(p)) glob_walk(p, comps, i + 1, out);
    return;
  }
  for (const std::string& n : list_dir(dir)) {
    if (::fnmatch(c.c_str(), n.c_str(), FNM_PERIOD) != 0) continue;
    std::string p = join(dir, n);
    if (i + 1 < comps.size() && !is_dir(p)) continue;
    glob_walk(p, comps, i + 1, out);
  }
}

class LocalFileSystem : public FileSystem {
 public:
  std::vector<std::string> glob(const std::string& pattern) override {
    std::string p = pattern.rfind("file://", 0) == 0 ? pattern.substr(7) : pattern;
    if (!has_magic(p)) return exists(p) ? std::vector<std::string>{p} : std::vector<std::string>{};
    std::vector<std::string> comps = split_path(p);
    std::vector<std::string> out;
    glob_walk(p[0] == '/' ? "/" : "", comps, 0, out);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    // A match must be a file; directories matched by a trailing `*` are not documents.
    out.erase(std::remove_if(out.begin(), out.end(), [](const std::string& f) { return is_dir(f); }), out.end());
    return out;
  }
  FileInfo stat(const std::string& path) override {
    std::string p = path.rfind("file://", 0) == 0 ? path.substr(7) : path;
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) throw DataError(path + ": cannot read: " + errno_text());
    if (S_ISDIR(st.st_mode)) throw DataError(path + ": is a directory, not a data file");
    if (::access(p.c_str(), R_OK) != 0) throw DataError(path + ": cannot read: " + errno_text());
    FileInfo info;
    info.size = st.st_size;
    info.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    return info;
  }
  std::unique_ptr<InputStream> open(const std::string& path) override {
    std::string p = path.rfind("file://", 0) == 0 ? path.substr(7) : path;
    return std::make_unique<LocalInputStream>(p);
  }
};

// Expands the first top-level brace group of `s`, recursively.
void expand_braces_into(const std::string& s, std::vector<std::string>& out) {
  size_t open = std::string::npos;
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '{') {
      if (depth == 0) open = i;
      ++depth;
    } else if (s[i] == '}') {
      if (depth == 0) throw DataError("'" + s + "': unbalanced '}' in brace expansion");
      if (--depth == 0) {
        std::string inner = s.substr(open + 1, i - open - 1);
        std::string prefix = s.substr(0, open), suffix = s.substr(i + 1);
        // Split the inner text on top-level commas.
        std::vector<std::string> alts;
        std::string cur;
        int d = 0;
        for (char c : inner) {
          if (c == '{') ++d;
          if (c == '}') --d;
          if (c == ',' && d == 0) {
            alts.push_back(cur);
            cur.clear();
          } else {
            cur += c;
          }
        }
        alts.push_back(cur);
        if (alts.size() == 1) {
          // A numeric range {a..b}, or a literal brace group (kept as written, like bash).
          size_t dots = inner.find("..");
          bool range = false;
          if (dots != std::string::npos) {
            std::string a = inner.substr(0, dots), b = inner.substr(dots + 2);
            auto is_int = [](const std::string& x) {
              size_t k = (!x.empty() && x[0] == '-') ? 1 : 0;
              return x.size() > k && std::all_of(x.begin() + k, x.end(), ::isdigit);
            };
            if (is_int(a) && is_int(b)) {
              range = true;
              long long lo = std::stoll(a), hi = std::stoll(b);
              size_t width =
                  ((a.size() > 1 && a[0] == '0') || (b.size() > 1 && b[0] == '0')) ? std::max(a.size(), b.size()) : 0;
              long long step = lo <= hi ? 1 : -1;
              for (long long v = lo;; v += step) {
                std::string num = std::to_string(v);
                if (num.size() < width) num = std::string(width - num.size(), '0') + num;
                expand_braces_into(prefix + num + suffix, out);
                if (v == hi) break;
              }
            }
          }
          if (!range) {
            std::vector<std::string> rest;
            expand_braces_into(suffix, rest);
            for (const std::string& r : rest) out.push_back(prefix + "{" + inner + "}" + r);
          }
          return;
        }
        for (const std::string& a : alts) expand_braces_into(prefix + a + suffix, out);
        return;
      }
    }
  }
  if (depth != 0) throw DataError("'" + s + "': unbalanced '{' in brace expansion");
  out.push_back(s);
}

}  // namespace

FileSystem& filesystem_for(const std::string& url) {
  static LocalFileSystem local;
  size_t scheme = url.find("://");
  if (scheme != std::string::npos && url.compare(0, scheme, "file") != 0) {
    throw DataError(url + ": no store for '" + url.substr(0, scheme) +
                    "://' URLs in this build (only local paths and file://); copy the data locally");
  }
  return local;
}

std::vector<std::string> expand_braces(const std::string& pattern) {
  std::vector<std::string> out;
  expand_braces_into(pattern, out);
  return out;
}

std::vector<std::string> expand_urls(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const std::string& pattern : patterns) {
    size_t before = out.size();
    for (const std::string& g : expand_braces(pattern)) {
      for (const std::string& f : filesystem_for(g).glob(g)) {
        if (seen.insert(f).second) out.push_back(f);
      }
    }
    if (out.size() == before) {
      bool magic = has_magic(pattern) || pattern.find('{') != std::string::npos;
      throw DataError(pattern + (magic ? ": the pattern matches no files" : ": no such file"));
    }
  }
  return out;
}

// --- ContentHash: 8-byte words, multiply-xorshift mixing (in the spirit of splitmix64 / wyhash) ------------

static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

void ContentHash::update(const char* data, size_t n) {
  length_ += n;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(data);
  while (n > 0 && tail_n_ > 0 && tail_n_ < 8) {
    tail_[tail_n_++] = *p++;
    --n;
  }
  if (tail_n_ == 8) {
    uint64_t w;
    std::memcpy(&w, tail_, 8);
    state_ = mix64(state_ ^ w) + 0x632BE59BD9B4E019ull;
    tail_n_ = 0;
  }
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    state_ = mix64(state_ ^ w) + 0x632BE59BD9B4E019ull;
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    tail_[tail_n_++] = *p++;
    --n;
  }
}

uint64_t ContentHash::digest() const {
  uint64_t w = 0;
  std::memcpy(&w, tail_, tail_n_);
  return mix64(mix64(state_ ^ w ^ (static_cast<uint64_t>(tail_n_) << 56)) ^ length_);
}

std::string ContentHash::hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

uint64_t hash_file(const std::string& path) {
  auto in = filesystem_for(path).open(path);
  ContentHash h;
  std::vector<char> buf(1 << 20);
  while (size_t n = in->read(buf.data(), buf.size())) h.update(buf.data(), n);
  return h.digest();
}

}  // namespace levanter::data
