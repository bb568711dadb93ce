// trainer.sample: continuations of fixed prompts, every `steps` steps and at the end, logged through the tracker as
// text (`samples/<i>`: the prompt followed by what the model wrote), so metrics.jsonl and TensorBoard's Text tab show
// how the model's writing changes as it trains.
//
// Reproducible: the draws of the sample after s completed steps come from the run's root key folded with a constant
// and s, so a resumed run writes the same samples as an uninterrupted one (with the same thread count).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "haliax/random.h"
#include "levanter/inference/sample_config.h"
#include "levanter/trainer/trainer.h"

namespace levanter::data {
class Tokenizer;
}
namespace levanter::tracker {
class Tracker;
}

namespace levanter::trainer {

class SampleHook : public Hook {
 public:
  SampleHook(const inference::SampleConfig& config, const data::Tokenizer& tokenizer, haliax::random::Key key,
             tracker::Tracker& tracker);
  void after_step(const StepInfo& info, TrainerState& state) override;
  void at_end(TrainerState& state) override;

  // The texts logged after `state.step` completed steps (prompt + continuation, one per prompt).
  std::vector<std::string> samples(const TrainerState& state) const;

 private:
  void log(const TrainerState& state);
  inference::SampleConfig config_;
  const data::Tokenizer& tokenizer_;
  haliax::random::Key key_;
  tracker::Tracker& tracker_;
  std::vector<std::vector<int64_t>> prompts_;
  int64_t last_logged_ = -1;
};

}  // namespace levanter::trainer
