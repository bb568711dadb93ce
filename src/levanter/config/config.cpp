#include "levanter/config/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

namespace levanter::config {

namespace fs = std::filesystem;

Context Context::child(const std::string& key) const {
  Context c{file, path.empty() ? key : path + "." + key, includes};
  if (includes) {
    auto it = includes->find(c.path);
    if (it != includes->end()) c.file = it->second;
  }
  return c;
}

std::string Context::where(const YAML::Node& node) const {
  YAML::Mark m = node.Mark();
  std::string f = file.empty() ? "<config>" : file;
  if (m.line < 0 || m.is_null() || f.rfind("command line", 0) == 0) return f;  // no line: not from a file
  return f + ":" + std::to_string(m.line + 1);
}

void fail(const Context& ctx, const YAML::Node& node, const std::string& message) {
  std::string key = ctx.path.empty() ? "" : ctx.path + ": ";
  throw ConfigError(ctx.where(node) + ": " + key + message);
}

std::string key_name(const Context& ctx, const YAML::Node& key) {
  if (!key.IsScalar()) fail(ctx, key, "a key must be a name, not null, a list or a mapping");
  return key.Scalar();
}

static size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string nearest(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(key, c);
    // Also count a shared prefix/suffix ("num_train_step" vs "num_train_steps") as close.
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  if (best.empty()) return best;
  size_t limit = std::max<size_t>(2, std::max(key.size(), best.size()) / 2);
  return best_d <= limit ? best : std::string();
}

// --- Duration ----------------------------------------------------------------------------------------------

Duration Duration::parse(const std::string& text) {
  std::string t = text;
  t.erase(std::remove_if(t.begin(), t.end(), ::isspace), t.end());
  if (t.empty()) throw std::invalid_argument("empty duration");
  size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  if (i == 0) throw std::invalid_argument("duration must start with a number, e.g. 10m");
  double n = std::stod(t.substr(0, i));
  std::string unit = t.substr(i);
  double mult;
  if (unit.empty() || unit == "s" || unit == "sec" || unit == "seconds")
    mult = 1;
  else if (unit == "ms")
    mult = 1e-3;
  else if (unit == "m" || unit == "min" || unit == "minutes")
    mult = 60;
  else if (unit == "h" || unit == "hr" || unit == "hours")
    mult = 3600;
  else if (unit == "d" || unit == "days")
    mult = 86400;
  else
    throw std::invalid_argument("unknown duration unit '" + unit + "' (use ms, s, m, h or d)");
  return Duration(std::chrono::duration<double>(n * mult));
}

std::string Duration::str() const {
  double s = seconds();
  auto fmt = [](double v, const char* unit) {
    std::ostringstream o;
    o << v << unit;
    return o.str();
  };
  if (s >= 3600 && std::fmod(s, 3600) == 0) return fmt(s / 3600, "h");
  if (s >= 60 && std::fmod(s, 60) == 0) return fmt(s / 60, "m");
  return fmt(s, "s");
}

// --- scalars -----------------------------------------------------------------------------------------------

static std::string scalar_text(const YAML::Node& n, const Context& c, const char* expected) {
  if (!n.IsScalar())
    fail(c, n,
         std::string("expected ") + expected + ", got a " +
             (n.IsMap()        ? "mapping"
              : n.IsSequence() ? "list"
                               : "null"));
  return n.Scalar();
}

void parse_value(const YAML::Node& n, const Context& c, bool& out) {
  std::string s = scalar_text(n, c, "true or false");
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(), ::tolower);
  if (l == "true" || l == "yes" || l == "on" || l == "1")
    out = true;
  else if (l == "false" || l == "no" || l == "off" || l == "0")
    out = false;
  else
    fail(c, n, "expected true or false, got '" + s + "'");
}

void parse_value(const YAML::Node& n, const Context& c, int64_t& out) {
  std::string s = scalar_text(n, c, "an integer");
  try {
    size_t pos = 0;
    // Accept 1e6-style integers (Levanter configs write them) when they are exact.
    if (s.find_first_of("eE.") != std::string::npos) {
      double d = std::stod(s, &pos);
      if (pos != s.size() || d != std::floor(d) || std::fabs(d) > 9.2e18) throw std::invalid_argument(s);
      out = static_cast<int64_t>(d);
      return;
    }
    out = std::stoll(s, &pos, 0);
    if (pos != s.size()) throw std::invalid_argument(s);
  } catch (const std::exception&) {
    fail(c, n, "expected an integer, got '" + s + "'");
  }
}

void parse_value(const YAML::Node& n, const Context& c, int& out) {
  int64_t v = 0;
  parse_value(n, c, v);
  if (v < INT32_MIN || v > INT32_MAX) fail(c, n, "integer out of range: " + std::to_string(v));
  out = static_cast<int>(v);
}

void parse_value(const YAML::Node& n, const Context& c, double& out) {
  std::string s = scalar_text(n, c, "a number");
  try {
    size_t pos = 0;
    out = std::stod(s, &pos);
    if (pos != s.size()) throw std::invalid_argument(s);
  } catch (const std::exception&) {
    fail(c, n, "expected a number, got '" + s + "'");
  }
}

void parse_value(const YAML::Node& n, const Context& c, std::string& out) {
  if (n.IsNull()) {
    out.clear();
    return;
  }
  out = scalar_text(n, c, "a string");
  // No name, path or note holds a control character other than tab and newline; and yaml-cpp writes a lone carriage
  // return unquoted, so the dumped config (run records, checkpoints) would read back without it.
  for (unsigned char ch : out) {
    if (ch < 0x20 && ch != '\t' && ch != '\n') {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", ch);
      fail(c, n, std::string("contains the control character ") + hex + "; a string value is text");
    }
  }
}

void parse_value(const YAML::Node& n, const Context& c, Duration& out) {
  std::string s = scalar_text(n, c, "a duration like 10m");
  try {
    out = Duration::parse(s);
  } catch (const std::exception& e) {
    fail(c, n, "expected a duration like 10m, 30s or 1h, got '" + s + "' (" + e.what() + ")");
  }
}

void Reader::rejected(const char* key, const char* reason) {
  keys_.emplace_back(key);
  YAML::Node child = node_[key];
  if (!child.IsDefined() || child.IsNull()) return;
  if ((child.IsSequence() || child.IsMap()) && child.size() == 0) return;
  if (child.IsScalar()) {
    std::string s = child.Scalar();
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    if (s == "false" || s == "no" || s == "off" || s.empty()) return;
  }
  Context c = ctx_.child(key);
  throw ConfigError(c.where(child) + ": " + c.path + " is not supported by levanter-cpp: " + reason +
                    " (remove the key or set it to null)");
}

void Reader::ignored(const char* key, const char* reason) {
  keys_.emplace_back(key);
  YAML::Node child = node_[key];
  if (child.IsDefined() && !child.IsNull()) {
    std::cerr << "warning: " << ctx_.where(child) << ": " << ctx_.child(key).path << " has no effect here: " << reason
              << "\n";
  }
}

void Reader::finish() const {
  for (const auto& kv : node_) {
    std::string key = key_name(ctx_, kv.first);
    if (std::find(keys_.begin(), keys_.end(), key) != keys_.end()) continue;
    std::string msg = "unknown key '" + ctx_.child(key).path + "'";
    std::string near = nearest(key, keys_);
    if (!near.empty()) msg += "; did you mean '" + near + "'?";
    std::string valid;
    for (const std::string& k : keys_) valid += (valid.empty() ? "" : ", ") + k;
    msg += " Valid keys" + (ctx_.path.empty() ? std::string() : " under '" + ctx_.path + "'") + ": " + valid;
    Context c = ctx_.child(key);
    throw ConfigError(c.where(kv.first) + ": " + msg);
  }
}

// --- dumping -----------------------------------------------------------------------------------------------

YAML::Node to_yaml_value(bool v) { return YAML::Node(v); }
YAML::Node to_yaml_value(int v) { return YAML::Node(v); }
YAML::Node to_yaml_value(int64_t v) { return YAML::Node(static_cast<long long>(v)); }
YAML::Node to_yaml_value(double v) {
  // The shortest %g form that reads back as exactly v (%.17g always does): 6e-4, not 0.00059999999999999995.
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  YAML::Node n;
  n = s;
  return n;
}
YAML::Node to_yaml_value(const std::string& v) { return YAML::Node(v); }
YAML::Node to_yaml_value(const Duration& v) { return YAML::Node(v.str()); }

std::string type_name(bool) { return "bool"; }
std::string type_name(int) { return "int"; }
std::string type_name(int64_t) { return "int"; }
std::string type_name(double) { return "float"; }
std::string type_name(const std::string&) { return "string"; }
std::string type_name(const Duration&) { return "duration"; }

std::string default_text(const YAML::Node& n) {
  if (n.IsNull()) return "(none)";
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

static std::string escape_cell(std::string s) {
  for (size_t i = 0; (i = s.find('|', i)) != std::string::npos; i += 2) s.replace(i, 1, "\\|");
  return s;
}

std::string markdown_table(const std::vector<DocRow>& rows) {
  std::string out = "| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
  for (const auto& r : rows) {
    if (r.type == "section") {
      out += "| **`" + r.key + "`** | section | | " + escape_cell(r.help) + " |\n";
    } else {
      out += "| `" + r.key + "` | " + escape_cell(r.type) + " | " +
             (r.default_value.empty() ? std::string() : "`" + escape_cell(r.default_value) + "`") + " | " +
             escape_cell(r.help) + " |\n";
    }
  }
  return out;
}

std::string dump(const YAML::Node& node) {
  YAML::Emitter e;
  e << node;
  return std::string(e.c_str()) + "\n";
}

// --- files and overrides -----------------------------------------------------------------------------------

static YAML::Node load_yaml_impl(const std::string& path, const std::string& prefix, IncludeMap* includes, int depth);

static std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// Walks one file's tree once: replaces `!include` nodes and refuses duplicate keys. A node reached again through a
// YAML alias (the same node, at the same position) is not walked again, so an alias bomb (a few lines whose aliases
// expand to billions of nodes) costs one visit per written node.
static void replace_includes(YAML::Node n, const std::string& file, const fs::path& dir, const std::string& prefix,
                             IncludeMap* includes, int depth, std::set<size_t>& visited) {
  if (depth > 64) throw ConfigError(file + ": nested more than 64 levels deep");
  const YAML::Mark mark = n.Mark();
  if (mark.pos >= 0 && !visited.insert(static_cast<size_t>(mark.pos)).second) return;
  auto include = [&](const YAML::Node& tag, const std::string& at) {
    if (!tag.IsScalar()) {
      throw ConfigError(file + ":" + std::to_string(tag.Mark().line + 1) + ": " + at + ": !include needs a file name");
    }
    std::string p = (dir / tag.Scalar()).string();
    if (includes) (*includes)[at] = p;
    return load_yaml_impl(p, at, includes, depth + 1);
  };
  if (n.IsMap()) {
    // yaml-cpp keeps every pair of a duplicated key and n[key] finds the first; Levanter's loader keeps the last.
    // Either way one value is silently lost: an error naming both lines.
    std::map<std::string, int> first_line;
    for (auto kv : n) {
      if (!kv.first.IsScalar()) {
        throw ConfigError(file + ":" + std::to_string(kv.first.Mark().line + 1) + ": " +
                          (prefix.empty() ? "" : prefix + ": ") +
                          "a key must be a name, not null, a list or a mapping");
      }
      const std::string key = kv.first.Scalar();
      const int line = kv.first.Mark().line + 1;
      auto [it, fresh] = first_line.emplace(key, line);
      if (!fresh) {
        throw ConfigError(file + ":" + std::to_string(line) + ": " + join_key(prefix, key) +
                          ": duplicate key (first given on line " + std::to_string(it->second) +
                          "); give each key once");
      }
    }
    for (auto kv : n) {
      YAML::Node child = kv.second;
      std::string key = kv.first.Scalar();  // a scalar: checked above
      if (child.Tag() == "!include") {
        n[key] = include(child, join_key(prefix, key));
      } else {
        replace_includes(child, file, dir, join_key(prefix, key), includes, depth + 1, visited);
      }
    }
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      std::string key = join_key(prefix, std::to_string(i));
      if (n[i].Tag() == "!include") {
        n[i] = include(n[i], key);
      } else {
        replace_includes(n[i], file, dir, key, includes, depth + 1, visited);
      }
    }
  }
}

static YAML::Node load_yaml_impl(const std::string& path, const std::string& prefix, IncludeMap* includes, int depth) {
  if (depth > 16) throw ConfigError(path + ": !include nested more than 16 levels (a cycle?)");
  // Only regular files: a directory gives a library message, a FIFO or a device blocks forever.
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw ConfigError(path + ": config file not found");
  if (fs::is_directory(st)) throw ConfigError(path + ": is a directory, not a config file");
  if (!fs::is_regular_file(st)) {
    throw ConfigError(path + ": not a regular file (a FIFO, socket or device): give a YAML file");
  }
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read config file");
  YAML::Node root;
  try {
    root = YAML::Load(in);
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
  if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
  // Not a mapping: say what it is, never echo its content (it may not be a config file at all).
  if (!root.IsMap()) {
    throw ConfigError(path +
                      ": not a YAML mapping of keys (a config file, or a section given with !include, "
                      "must be `key: value` lines)");
  }
  std::set<size_t> visited;
  replace_includes(root, path, fs::path(path).parent_path(), prefix, includes, depth, visited);
  return root;
}

YAML::Node load_yaml_file(const std::string& path, IncludeMap* includes) {
  return load_yaml_impl(path, "", includes, 0);
}

void apply_overrides(YAML::Node& root, const std::vector<std::string>& args, IncludeMap* includes) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a.size() < 3) {
      throw ConfigError("unexpected argument '" + a + "': overrides are written --section.key value");
    }
    std::string key = a.substr(2), value;
    size_t eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      if (i + 1 >= args.size()) throw ConfigError("override --" + key + " needs a value");
      value = args[++i];
    }
    YAML::Node parsed;
    try {
      parsed = YAML::Load(value);
    } catch (const YAML::Exception& e) {
      throw ConfigError("override --" + key + ": invalid value '" + value + "': " + e.msg);
    }
    // Walk/create the path. yaml-cpp nodes are handles, so assigning through them edits the tree.
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    if (parts.empty() || key.back() == '.' ||
        std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); })) {
      throw ConfigError("override --" + key + ": a key is dot-separated names (--section.key), none of them empty");
    }
    YAML::Node cur = root;
    for (size_t k = 0; k + 1 < parts.size(); ++k) {
      YAML::Node next = cur[parts[k]];
      if (!next.IsDefined() || next.IsNull()) {
        cur[parts[k]] = YAML::Node(YAML::NodeType::Map);
        next = cur[parts[k]];
      } else if (!next.IsMap()) {
        std::string prefix;
        for (size_t j = 0; j <= k; ++j) prefix += (j ? "." : "") + parts[j];
        throw ConfigError("override --" + key + ": '" + prefix + "' is not a section");
      }
      cur.reset(next);
    }
    cur[parts.back()] = parsed;
    if (includes) (*includes)[key] = "command line (--" + key + ")";
  }
}

}  // namespace levanter::config
