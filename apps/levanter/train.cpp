// `levanter train --config FILE [--section.key value ...]`: train (or resume) a model as configured.
#include <cmath>
#include <cstdio>
#include <iostream>

#include "command.h"
#include "levanter/runtime/signals.h"
#include "levanter/trainer/trainer.h"

namespace {

std::function<int()> setup(CLI::App& app) {
  auto config = std::make_shared<std::string>();
  auto quiet = std::make_shared<bool>(false);
  app.add_option("--config,-c", *config, "Training config (YAML with Levanter's keys)")->required();
  app.add_flag("--quiet,-q", *quiet, "No progress lines");
  app.allow_extras();
  app.footer(
      "Any config key can be overridden: --trainer.num_train_steps 100 --optimizer.learning_rate 1e-3.\n"
      "Killed and started again with the same command, a run resumes from its newest complete checkpoint.\n"
      "SIGINT (Ctrl-C), SIGTERM or SIGHUP: the current step finishes, a checkpoint is saved and levanter exits\n"
      "with 128 + the signal's number (130, 143, 129); a second signal ends it at once. A run's directories are\n"
      "locked while it trains: a second run with the same id is refused.");
  return [config, quiet, &app] {
    std::vector<std::string> overrides = app.remaining();
    levanter::trainer::TrainLmConfig cfg = levanter::trainer::load_train_config(*config, overrides);
    levanter::trainer::TrainOptions opts;
    opts.config_file = *config;
    opts.command_line.push_back("levanter train --config " + *config);
    for (const auto& o : overrides) opts.command_line.push_back(o);
    opts.progress = !*quiet;
    // From here a stop signal lets the current step finish and checkpoints (see runtime/signals.h).
    levanter::runtime::install_stop_signal_handlers();
    auto r = levanter::trainer::train(cfg, opts);
    std::printf("run:         %s\n", r.paths.run_id.c_str());
    std::printf("metrics:     %s\n", r.paths.metrics.c_str());
    std::printf("run record:  %s\n", r.paths.record.c_str());
    std::printf("checkpoint:  %s\n", r.last_checkpoint ? r.last_checkpoint->c_str() : "(none)");
    if (std::isfinite(r.final_loss))
      std::printf("final train loss: %.4f (step %lld)\n", r.final_loss, (long long)r.final_step);
    for (const auto& [name, em] : r.eval) {
      std::printf("validation%s%s: loss %.4f  perplexity %.2f  bits/byte %.4f  (%lld tokens)\n",
                  name.empty() ? "" : " ", name.c_str(), em.loss, em.perplexity, em.bpb, (long long)em.tokens);
    }
    if (r.stopped_by_signal) {
      std::fflush(stdout);
      std::fprintf(stderr,
                   "levanter: stopped by %s after step %lld of %lld (checkpoint: %s). Run the same command to "
                   "resume. Exit status %d\n",
                   levanter::runtime::stop_signal_name(r.stopped_by_signal), (long long)r.final_step,
                   (long long)cfg.trainer.num_train_steps, r.last_checkpoint ? r.last_checkpoint->c_str() : "none",
                   levanter::runtime::stop_exit_code(r.stopped_by_signal));
      return levanter::runtime::stop_exit_code(r.stopped_by_signal);
    }
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(train, "train", "Train a language model (resumes from the newest checkpoint)", setup);
