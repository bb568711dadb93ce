// Inputs found by fuzz_config (fuzz/, scripts/fuzz) that broke the config loader, and the error each must give
// instead. fuzz/README.md lists the findings.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "levanter/config/config.h"
#include "levanter/temp_dir.h"

using namespace levanter::config;
using ::testing::HasSubstr;

namespace {

struct Section {
  int64_t steps = 1;
  std::map<std::string, double> weights;
  template <typename V>
  void fields(V& v) {
    v("steps", steps, "Steps");
    v("weights", weights, "Mixture weights");
  }
};

struct Root {
  Section trainer;
  template <typename V>
  void fields(V& v) {
    v("trainer", trainer, "Trainer settings");
  }
};

struct Urls {
  std::vector<std::string> urls;
  template <typename V>
  void fields(V& v) {
    v("urls", urls, "Files");
  }
};

template <typename F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string override_error(const std::vector<std::string>& args) {
  YAML::Node root(YAML::NodeType::Map);
  try {
    apply_overrides(root, args);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// `--=lion` has an empty key: apply_overrides took parts.back() of an empty list (undefined behaviour; UBSan
// stopped it). Empty names between dots were silently made keys "".
TEST(FuzzRegressionConfig, OverrideWithAnEmptyKeyIsAnError) {
  EXPECT_THAT(override_error({"--=lion"}), HasSubstr("override --: a key is dot-separated names"));
  EXPECT_THAT(override_error({"--", "x"}), HasSubstr("overrides are written --section.key value"));
  EXPECT_THAT(override_error({"--.a=1"}), HasSubstr("override --.a: a key is dot-separated names"));
  EXPECT_THAT(override_error({"--a..b=1"}), HasSubstr("override --a..b: a key"));
  EXPECT_THAT(override_error({"--a.=1"}), HasSubstr("override --a.: a key"));
  EXPECT_EQ(override_error({"--a.b=1"}), "(no error)");
}

// A key that is a mapping, a list or null (YAML's `? kenizer: gpt2` in a section, found by fuzz_config): every key
// was read with as<std::string>(), so yaml-cpp's TypedBadConversion escaped with "bad conversion" and no file.
TEST(FuzzRegressionConfig, KeyThatIsNotANameIsAnError) {
  levanter::testing::TempDir t;
  const std::string file = t / "c.yaml";
  std::ofstream(file) << "trainer:\n  steps: 2\n  ? kenizer: gpt2\n";
  EXPECT_EQ(config_error([&] { load<Root>(file); }),
            file + ":3: trainer: a key must be a name, not null, a list or a mapping");
  EXPECT_THAT(config_error([] { parse_string<Root>("trainer: {? [a, b]: 1}", "s.yaml"); }),
              HasSubstr("s.yaml:1: trainer: a key must be a name"));
  EXPECT_THAT(config_error([] { parse_string<Root>("trainer:\n  weights: {~: 0.5}\n", "s.yaml"); }),
              HasSubstr("s.yaml:2: trainer.weights: a key must be a name"));
  EXPECT_THAT(config_error([] { load<Root>("", {"--trainer.weights={[a]: 1}"}); }),
              HasSubstr("trainer.weights: a key must be a name"));
  EXPECT_EQ(parse_string<Root>("trainer: {weights: {a: 0.5}}").trainer.weights.at("a"), 0.5);
}

// A string holding a lone carriage return (`train_urls: <CR>` at the end of a file, found by fuzz_config through its
// dump round trip): yaml-cpp dumps it unquoted and reads the dump back as "", so the run record's config was not the
// config that ran. Control characters other than tab and newline are refused.
TEST(FuzzRegressionConfig, ControlCharacterInAStringIsAnError) {
  EXPECT_EQ(config_error([] { parse_string<Urls>("urls: \r", "s.yaml"); }),
            "s.yaml:1: urls: contains the control character 0x0D; a string value is text");
  EXPECT_THAT(config_error([] { parse_string<Urls>("urls: [\"a\\x01b\"]", "s.yaml"); }),
              HasSubstr("urls.0: contains the control character 0x01"));
  EXPECT_EQ(parse_string<Urls>("urls: [\"a\\tb\\nc\"]").urls.at(0), "a\tb\nc");
}
