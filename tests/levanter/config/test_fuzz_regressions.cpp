// Inputs found by fuzz_config (fuzz/, scripts/fuzz) that broke the config loader, and the error each must give
// instead. fuzz/README.md lists the findings.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "levanter/config/config.h"

using namespace levanter::config;
using ::testing::HasSubstr;

namespace {

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
