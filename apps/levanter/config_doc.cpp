// `levanter config`: print every configuration key with its type, default and meaning (the source of
// docs/configuration.md), or check a config file without training (--check FILE).
#include <cstdio>
#include <iostream>

#include "command.h"
#include "levanter/trainer/trainer.h"

namespace {

std::function<int()> setup(CLI::App& app) {
  auto check = std::make_shared<std::string>();
  auto dump = std::make_shared<bool>(false);
  app.add_option("--check", *check, "Load and validate this config (with any --key value overrides) and exit");
  app.add_flag("--dump", *dump, "With --check: print the resolved config (every key, with defaults filled in)");
  app.allow_extras();
  return [check, dump, &app] {
    if (!check->empty()) {
      auto cfg = levanter::trainer::load_train_config(*check, app.remaining());
      if (*dump) std::cout << levanter::config::dump(levanter::config::to_yaml_value(cfg));
      std::fprintf(stderr, "%s: ok (run id %s)\n", check->c_str(), levanter::trainer::run_id_for(cfg).c_str());
      return 0;
    }
    std::fputs(levanter::config::markdown_table(levanter::trainer::describe_train_config()).c_str(), stdout);
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(config, "config", "Print the configuration reference, or --check a config file", setup);
