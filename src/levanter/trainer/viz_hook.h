// The token-probability view during training (trainer.viz; docs/visualization.md): a fixed sample of validation
// documents scored with the current model at step 0, every trainer.viz.steps steps and at the end, appended to
// <run dir>/token_probs.jsonl. It only reads the model (no gradients, no dropout, no random numbers), so training is
// bit for bit what it is without it.
#pragma once

#include <c10/core/ScalarType.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "levanter/eval/token_probs.h"
#include "levanter/trainer/trainer.h"
#include "levanter/viz/config.h"
#include "levanter/viz/sample.h"
#include "levanter/viz/token_probs.h"

namespace levanter::data {
class TextData;
}

namespace levanter::trainer {

// eval's scores in the store's terms.
std::vector<viz::DocScores> to_viz_scores(const std::vector<eval::TokenScores>& scores);

// Scores `sample` with `model` (parameters cast to `compute`), top_k alternatives each.
std::vector<viz::DocScores> score_sample(const models::LmHeadModel& model, const viz::Sample& sample, int64_t top_k,
                                         at::ScalarType compute);

class VizHook : public Hook {
 public:
  // Registered every config.steps steps (> 0). The sample is chosen at the start of training (it waits for the
  // validation cache, as the evaluator does).
  VizHook(const viz::VizConfig& config, data::TextData& data, int64_t max_seq_len, uint64_t seed,
          at::ScalarType compute, int64_t num_train_steps, std::string run_dir, bool progress);
  ~VizHook() override;
  // Chooses the sample, opens the file (a resumed run marks the step it continues from) and scores step 0, or the
  // step the run resumes at when it is one of the view's steps or had a record (the end of a shorter run).
  void at_start(const TrainerState& state) override;
  void after_step(const StepInfo& info, TrainerState& state) override;
  void at_end(TrainerState& state) override;

  // Scorings done by this process and the wall time they took (records built and written included).
  int64_t scorings() const { return scorings_; }
  double seconds() const { return seconds_; }

 private:
  void score(const TrainerState& state);
  viz::VizConfig config_;
  data::TextData& data_;
  int64_t max_seq_len_;
  uint64_t seed_;
  at::ScalarType compute_;
  int64_t num_steps_;
  std::string path_;
  bool progress_;
  std::optional<viz::Sample> sample_;
  std::unique_ptr<viz::TokenProbsWriter> writer_;
  int64_t scorings_ = 0;
  double seconds_ = 0;
};

}  // namespace levanter::trainer
