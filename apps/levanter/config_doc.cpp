// `levanter config`: print every configuration key with its type, default and meaning (the source of
// docs/configuration.md), or check a config file without training (--check FILE).
#include <cstdio>
#include <iostream>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "command.h"
#include "levanter/data/files.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/trainer/trainer.h"

namespace {

// --check also opens what the config names, as training would before step 0: every data file pattern must match
// regular files, the tokenizer must load, an initialize_from_hf directory must hold a config.json. Throws naming the
// key and the path.
std::string check_paths(const levanter::trainer::TrainLmConfig& cfg) {
  namespace fs = std::filesystem;
  std::string summary;
  auto files = [&](const std::string& key, const std::vector<std::string>& urls) {
    if (urls.empty()) return;
    std::vector<std::string> paths;
    try {
      paths = levanter::data::expand_urls(urls);
    } catch (const std::exception& e) {
      throw std::runtime_error(key + ": " + e.what());
    }
    for (const std::string& p : paths) {
      struct stat st {};
      if (::stat(p.c_str(), &st) != 0) throw std::runtime_error(key + ": " + p + ": not found");
      if (!S_ISREG(st.st_mode)) throw std::runtime_error(key + ": " + p + ": not a regular file");
      if (::access(p.c_str(), R_OK) != 0) throw std::runtime_error(key + ": " + p + ": not readable");
    }
    summary += "; " + key + ": " + std::to_string(paths.size()) + " file" + (paths.size() == 1 ? "" : "s");
  };
  if (cfg.data.is_mixture()) {
    for (const auto& [name, src] : cfg.data.configs) {
      files("data.configs." + name + ".train_urls", src.train_urls);
      files("data.configs." + name + ".validation_urls", src.validation_urls);
    }
  } else {
    files("data.train_urls", cfg.data.train_urls);
    files("data.validation_urls", cfg.data.validation_urls);
  }
  std::string tok_path;
  try {
    tok_path = levanter::data::resolve_tokenizer_path(cfg.data.tokenizer);
    auto tok = levanter::data::Tokenizer::from_file(tok_path);
    summary += "; tokenizer: " + std::to_string(tok.vocab_size()) + " tokens";
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("data.tokenizer: ") + e.what());
  }
  if (cfg.initialize_from_hf && !fs::exists(fs::path(*cfg.initialize_from_hf) / "config.json")) {
    throw std::runtime_error("initialize_from_hf: " + *cfg.initialize_from_hf + " has no config.json");
  }
  return summary;
}

std::function<int()> setup(CLI::App& app) {
  auto check = std::make_shared<std::string>();
  auto dump = std::make_shared<bool>(false);
  app.add_option("--check", *check,
                 "Load and validate this config (with any --key value overrides), open its data files and tokenizer, "
                 "and exit");
  app.add_flag("--dump", *dump, "With --check: print the resolved config (every key, with defaults filled in)");
  app.allow_extras();
  return [check, dump, &app] {
    if (!check->empty()) {
      auto cfg = levanter::trainer::load_train_config(*check, app.remaining());
      if (*dump) std::cout << levanter::config::dump(levanter::config::to_yaml_value(cfg));
      const std::string found = check_paths(cfg);
      std::fprintf(stderr, "%s: ok (run id %s%s)\n", check->c_str(), levanter::trainer::run_id_for(cfg).c_str(),
                   found.c_str());
      return 0;
    }
    std::fputs(levanter::config::markdown_table(levanter::trainer::describe_train_config()).c_str(), stdout);
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(config, "config", "Print the configuration reference, or --check a config file", setup);
