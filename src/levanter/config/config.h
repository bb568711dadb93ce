// Configuration: YAML files with Levanter's keys, overridable from the command line (--a.b.c value).
//
// A config struct declares each field once, with its help text, in `fields`:
//
//   struct CheckpointerConfig {
//     std::string base_path = "checkpoints";
//     Duration save_interval{std::chrono::minutes(15)};
//     template <typename V> void fields(V& v) {
//       v("base_path", base_path, "Directory that holds checkpoints");
//       v("save_interval", save_interval, "Time between temporary checkpoints, e.g. 10m");
//     }
//   };
//
// From that one declaration come: parsing with errors that name the file, line, key path and the nearest
// valid key; a dump of the resolved config (for run records and checkpoints); and the configuration
// reference in docs/ (`levanter config-doc`). Unknown keys are errors, never ignored.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace levanter::config {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where a node came from, for messages: "config/gpt2_nano.yaml:12: trainer.num_train_steps: ...".
// Included files: dotted key path of the section an `!include` replaced -> the file it came from.
using IncludeMap = std::map<std::string, std::string>;

struct Context {
  std::string file;                            // may be empty (built-in defaults, command line)
  std::string path;                            // dotted key path, "" at the root
  std::shared_ptr<const IncludeMap> includes;  // so that keys of an included file name that file
  Context child(const std::string& key) const;
  std::string where(const YAML::Node& node) const;  // "file:line" (or "<command line>")
};

[[noreturn]] void fail(const Context& ctx, const YAML::Node& node, const std::string& message);

// The text of a mapping key; a ConfigError naming the place when the key is null, a list or a mapping (YAML allows
// `? [a, b]: x`), which no config has.
std::string key_name(const Context& ctx, const YAML::Node& key);

// Closest of `candidates` to `key` by edit distance (empty if nothing is reasonably close).
std::string nearest(const std::string& key, const std::vector<std::string>& candidates);

// A time span written as "10m", "30s", "1h", "90" (seconds).
struct Duration {
  std::chrono::duration<double> value{0};
  Duration() = default;
  template <typename Rep, typename Period>
  Duration(std::chrono::duration<Rep, Period> d)
      : value(std::chrono::duration_cast<std::chrono::duration<double>>(d)) {}
  double seconds() const { return value.count(); }
  std::string str() const;
  static Duration parse(const std::string& text);  // throws std::invalid_argument
};

// --- parsing -----------------------------------------------------------------------------------------------

template <typename T, typename = void>
struct has_fields : std::false_type {};
template <typename T>
struct has_fields<T, std::void_t<decltype(std::declval<T&>().fields(std::declval<int&>()))>> : std::true_type {};

// A type with a custom parse (e.g. a tagged union) provides
//   void parse_yaml(const YAML::Node&, const Context&)  and  YAML::Node to_yaml() const.
template <typename T, typename = void>
struct has_custom_parse : std::false_type {};
template <typename T>
struct has_custom_parse<T, std::void_t<decltype(std::declval<T&>().parse_yaml(
                               std::declval<const YAML::Node&>(), std::declval<const Context&>()))>> : std::true_type {
};

void parse_value(const YAML::Node& n, const Context& c, bool& out);
void parse_value(const YAML::Node& n, const Context& c, int& out);
void parse_value(const YAML::Node& n, const Context& c, int64_t& out);
void parse_value(const YAML::Node& n, const Context& c, double& out);
void parse_value(const YAML::Node& n, const Context& c, std::string& out);
void parse_value(const YAML::Node& n, const Context& c, Duration& out);

template <typename T>
void parse_value(const YAML::Node& n, const Context& c, T& out);
template <typename T>
void parse_value(const YAML::Node& n, const Context& c, std::optional<T>& out);
template <typename T>
void parse_value(const YAML::Node& n, const Context& c, std::vector<T>& out);
template <typename T>
void parse_value(const YAML::Node& n, const Context& c, std::map<std::string, T>& out);

template <typename T>
void parse_value(const YAML::Node& n, const Context& c, std::optional<T>& out) {
  if (n.IsNull()) {
    out.reset();
    return;
  }
  T v = out ? *out : T{};
  parse_value(n, c, v);
  out = std::move(v);
}

template <typename T>
void parse_value(const YAML::Node& n, const Context& c, std::vector<T>& out) {
  if (n.IsScalar() && !n.IsNull()) {
    // A single value where a list is expected: a list of one (Levanter accepts `train_urls: path`).
    T v{};
    parse_value(n, c, v);
    out = {std::move(v)};
    return;
  }
  if (!n.IsSequence()) fail(c, n, "expected a list");
  out.clear();
  for (size_t i = 0; i < n.size(); ++i) {
    T v{};
    parse_value(n[i], c.child(std::to_string(i)), v);
    out.push_back(std::move(v));
  }
}

template <typename T>
void parse_value(const YAML::Node& n, const Context& c, std::map<std::string, T>& out) {
  if (!n.IsMap()) fail(c, n, "expected a mapping of names to values");
  out.clear();
  for (const auto& kv : n) {
    std::string key = key_name(c, kv.first);
    T v{};
    parse_value(kv.second, c.child(key), v);
    out.emplace(key, std::move(v));
  }
}

// Reads the declared fields of a struct from a YAML mapping and rejects undeclared keys.
class Reader {
 public:
  Reader(const YAML::Node& node, Context ctx) : node_(node), ctx_(std::move(ctx)) {}
  template <typename T>
  void operator()(const char* key, T& value, const char* /*help*/ = "") {
    keys_.emplace_back(key);
    YAML::Node child = node_[key];
    if (child.IsDefined()) parse_value(child, ctx_.child(key), value);
  }
  // A key Levanter has that is not implemented here: allowed only when absent, null, false or empty (its "off"
  // value); anything else is a ConfigError that names the key and gives `reason`. Never silently ignored.
  void rejected(const char* key, const char* reason);
  // A Levanter performance knob with no effect on results here (e.g. a flush size of its cache builder): a
  // warning naming the key when it is set.
  void ignored(const char* key, const char* reason);
  void finish() const;

 private:
  const YAML::Node& node_;
  Context ctx_;
  std::vector<std::string> keys_;
};

template <typename T>
void parse_value(const YAML::Node& n, const Context& c, T& out) {
  if constexpr (has_custom_parse<T>::value) {
    out.parse_yaml(n, c);
  } else if constexpr (has_fields<T>::value) {
    if (n.IsNull()) return;  // "section:" with nothing under it keeps the defaults
    if (!n.IsMap()) fail(c, n, "expected a mapping (a section of keys)");
    Reader r(n, c);
    out.fields(r);
    r.finish();
  } else {
    static_assert(sizeof(T) == 0, "no parse_value for this config field type");
  }
}

// --- dumping -----------------------------------------------------------------------------------------------

YAML::Node to_yaml_value(bool v);
YAML::Node to_yaml_value(int v);
YAML::Node to_yaml_value(int64_t v);
YAML::Node to_yaml_value(double v);
YAML::Node to_yaml_value(const std::string& v);
YAML::Node to_yaml_value(const Duration& v);
template <typename T>
YAML::Node to_yaml_value(const T& v);
template <typename T>
YAML::Node to_yaml_value(const std::optional<T>& v);
template <typename T>
YAML::Node to_yaml_value(const std::vector<T>& v);
template <typename T>
YAML::Node to_yaml_value(const std::map<std::string, T>& v);

template <typename T>
YAML::Node to_yaml_value(const std::optional<T>& v) {
  return v ? to_yaml_value(*v) : YAML::Node(YAML::NodeType::Null);
}
template <typename T>
YAML::Node to_yaml_value(const std::vector<T>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const T& x : v) n.push_back(to_yaml_value(x));
  return n;
}
template <typename T>
YAML::Node to_yaml_value(const std::map<std::string, T>& v) {
  YAML::Node n(YAML::NodeType::Map);
  for (const auto& [k, x] : v) n[k] = to_yaml_value(x);
  return n;
}

class Writer {
 public:
  template <typename T>
  void operator()(const char* key, const T& value, const char* /*help*/ = "") {
    node_[key] = to_yaml_value(value);
  }
  void rejected(const char*, const char*) {}
  void ignored(const char*, const char*) {}
  YAML::Node node() const { return node_; }

 private:
  YAML::Node node_{YAML::NodeType::Map};
};

template <typename T>
YAML::Node to_yaml_value(const T& v) {
  if constexpr (has_custom_parse<T>::value) {
    return v.to_yaml();
  } else {
    static_assert(has_fields<T>::value, "no to_yaml_value for this config field type");
    Writer w;
    const_cast<T&>(v).fields(w);
    return w.node();
  }
}

// --- documentation -----------------------------------------------------------------------------------------

struct DocRow {
  std::string key;   // dotted path
  std::string type;  // "int", "float", "string", "bool", "duration", "list", "map", "section", ...
  std::string default_value;
  std::string help;
};

template <typename T>
void describe(std::vector<DocRow>& rows, const std::string& prefix, const T& defaults);

// The rows as a markdown table (| key | type | default | meaning |), as docs/configuration.md holds it.
std::string markdown_table(const std::vector<DocRow>& rows);

std::string type_name(bool);
std::string type_name(int);
std::string type_name(int64_t);
std::string type_name(double);
std::string type_name(const std::string&);
std::string type_name(const Duration&);
template <typename T>
std::string type_name(const T&);
template <typename T>
std::string type_name(const std::optional<T>&);
template <typename T>
std::string type_name(const std::vector<T>&);
template <typename T>
std::string type_name(const std::map<std::string, T>&);
template <typename T>
std::string type_name(const std::optional<T>&) {
  return type_name(T{}) + " (optional)";
}
template <typename T>
std::string type_name(const std::vector<T>&) {
  return "list of " + type_name(T{});
}
// A map's values: "list of string", or "list of string or null" where a value may be null.
template <typename T>
std::string value_type_name(const T& v) {
  return type_name(v);
}
template <typename T>
std::string value_type_name(const std::optional<T>&) {
  return type_name(T{}) + " or null";
}
template <typename T>
std::string type_name(const std::map<std::string, T>&) {
  return "map of name to " + value_type_name(T{});
}
template <typename T>
std::string type_name(const T&) {
  return has_custom_parse<T>::value ? "choice" : "section";
}

std::string default_text(const YAML::Node& n);

class Describer {
 public:
  Describer(std::vector<DocRow>& rows, std::string prefix) : rows_(rows), prefix_(std::move(prefix)) {}
  template <typename T>
  void operator()(const char* key, const T& value, const char* help = "") {
    std::string path = prefix_.empty() ? key : prefix_ + "." + key;
    if constexpr (has_fields<T>::value) {  // a custom-parsed type with fields (a list of them) lists its keys
      rows_.push_back({path, "section", "", help});
      describe(rows_, path, value);
    } else {
      rows_.push_back({path, type_name(value), default_text(to_yaml_value(value)), help});
    }
  }
  void rejected(const char* key, const char* reason) {
    rows_.push_back({prefix_.empty() ? key : prefix_ + "." + key, "-", "",
                     std::string("Not supported (an error when set): ") + reason});
  }
  void ignored(const char* key, const char* reason) {
    rows_.push_back({prefix_.empty() ? key : prefix_ + "." + key, "-", "",
                     std::string("Accepted, no effect (a warning when set): ") + reason});
  }

 private:
  std::vector<DocRow>& rows_;
  std::string prefix_;
};

template <typename T>
void describe(std::vector<DocRow>& rows, const std::string& prefix, const T& defaults) {
  Describer d(rows, prefix);
  const_cast<T&>(defaults).fields(d);
}

// --- files and overrides -----------------------------------------------------------------------------------

// Load a YAML file, resolving `!include other.yaml` tags (relative to the including file). With `includes`,
// records which section came from which file (for messages).
YAML::Node load_yaml_file(const std::string& path, IncludeMap* includes = nullptr);
// Apply `--a.b.c value` overrides (value parsed as YAML, so numbers, booleans and [lists] work).
// `args` are the raw extra arguments; anything that is not `--key value` or `--key=value` is an error. With
// `includes`, records that each overridden key came from the command line, so messages about it say so.
void apply_overrides(YAML::Node& root, const std::vector<std::string>& args, IncludeMap* includes = nullptr);
// Parse a whole config from a file plus overrides.
template <typename T>
T load(const std::string& file, const std::vector<std::string>& overrides = {}) {
  auto includes = std::make_shared<IncludeMap>();
  YAML::Node root = file.empty() ? YAML::Node(YAML::NodeType::Map) : load_yaml_file(file, includes.get());
  apply_overrides(root, overrides, includes.get());
  T out{};
  parse_value(root, Context{file, "", includes}, out);
  return out;
}
template <typename T>
T parse_string(const std::string& yaml, const std::string& name = "<string>") {
  YAML::Node root = YAML::Load(yaml);
  T out{};
  parse_value(root, Context{name, ""}, out);
  return out;
}
std::string dump(const YAML::Node& node);

}  // namespace levanter::config
