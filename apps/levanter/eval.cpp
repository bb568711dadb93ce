// `levanter eval --config FILE --checkpoint PATH [--section.key value ...]`: evaluate a saved checkpoint on the
// config's validation sets; prints the metrics and writes them as one JSON line (to --output, default stdout).
#include <fcntl.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "command.h"
#include "levanter/runtime/file_io.h"
#include "levanter/trainer/trainer.h"

namespace {

std::function<int()> setup(CLI::App& app) {
  auto config = std::make_shared<std::string>();
  auto ckpt = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  app.add_option("--config,-c", *config, "The config the model was trained with (model and data sections)")->required();
  app.add_option("--checkpoint", *ckpt, "A checkpoint directory (step-N) or a base path (its newest complete one)")
      ->required();
  app.add_option("--output,-o", *output, "Append the metrics as a JSON line to this file");
  app.allow_extras();
  return [config, ckpt, output, &app] {
    auto cfg = levanter::trainer::load_train_config(*config, app.remaining());
    auto results = levanter::trainer::evaluate_checkpoint(cfg, *ckpt);
    nlohmann::ordered_json row;
    row["checkpoint"] = *ckpt;
    for (const auto& [name, em] : results) {
      std::string p = name.empty() ? "eval/" : "eval/" + name + "/";
      row[p + "loss"] = em.loss;
      row[p + "perplexity"] = em.perplexity;
      row[p + "bpb"] = em.bpb;
      row[p + "tokens"] = em.tokens;
      std::fprintf(stderr, "validation%s%s: loss %.4f  perplexity %.2f  bits/byte %.4f  (%lld tokens)\n",
                   name.empty() ? "" : " ", name.c_str(), em.loss, em.perplexity, em.bpb, (long long)em.tokens);
    }
    const std::string line = row.dump() + "\n";
    if (output->empty()) {
      std::cout << line << std::flush;
      if (!std::cout) throw std::runtime_error("cannot write the metrics to standard output");
    } else {
      // Checked all the way (a full disk, a missing directory): an error, never an empty file and exit 0.
      levanter::runtime::File f = levanter::runtime::File::open(*output, O_WRONLY | O_CREAT | O_APPEND, 0644);
      f.write_all(line.data(), line.size());
      f.sync_data();
      f.close();
    }
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(eval, "eval", "Evaluate a checkpoint on the configured validation sets", setup);
