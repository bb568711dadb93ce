// The training config loader: trainer::load_train_config(file, overrides), the path of `levanter train --config`
// (YAML parsing, `!include`, duplicate keys, overrides, every section's fields and validation).
//
// Input: up to three parts separated by NUL bytes:
//   config.yaml  NUL  inc.yaml  NUL  overrides, one argument per line
// Both files are written to a scratch directory, so `key: !include inc.yaml` in the first loads the second.
// Expected: a ConfigError (its message names the file and line). Anything else escaping is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "levanter/config/config.h"
#include "levanter/trainer/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace levanter;
  const auto parts = fuzz::split_nul(std::string_view(reinterpret_cast<const char*>(data), size));
  const std::string dir = fuzz::scratch_dir();
  fuzz::write_file(dir + "/config.yaml", parts[0]);
  fuzz::write_file(dir + "/inc.yaml", parts.size() > 1 ? parts[1] : std::string_view());
  std::vector<std::string> overrides;
  if (parts.size() > 2) {
    std::string_view rest = parts[2];
    for (size_t nl; !rest.empty(); rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1)) {
      nl = rest.find('\n');
      overrides.emplace_back(rest.substr(0, nl));
    }
  }
  trainer::TrainLmConfig c;
  try {
    c = trainer::load_train_config(dir + "/config.yaml", overrides);
  } catch (const config::ConfigError& e) {
    fuzz::expected(e);
    return 0;
  } catch (const std::exception& e) {
    fuzz::unexpected(e);
  }
  // The resolved config is dumped into every run record and checkpoint, and a dump loads back as the same config
  // (resuming compares them): both must hold for any config that loads, so here even a ConfigError is a finding.
  try {
    const std::string dumped = config::dump(config::to_yaml_value(c));
    fuzz::write_file(dir + "/dumped.yaml", dumped);
    const trainer::TrainLmConfig again = trainer::load_train_config(dir + "/dumped.yaml", {});
    const std::string dumped_again = config::dump(config::to_yaml_value(again));
    if (dumped_again != dumped)
      std::fprintf(stderr, "dump:\n%s\ndump of its reload:\n%s\n", dumped.c_str(), dumped_again.c_str());
    LEVANTER_FUZZ_CHECK(dumped_again == dumped);
  } catch (const std::exception& e) {
    fuzz::unexpected(e);
  }
  return 0;
}
