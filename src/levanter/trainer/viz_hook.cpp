#include "levanter/trainer/viz_hook.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"

namespace levanter::trainer {

std::vector<viz::DocScores> to_viz_scores(const std::vector<eval::TokenScores>& scores) {
  std::vector<viz::DocScores> out;
  out.reserve(scores.size());
  for (const eval::TokenScores& s : scores) {
    viz::DocScores d;
    d.loss = s.loss;
    d.p = s.p;
    d.rank = s.rank;
    d.top.reserve(s.top.size());
    for (const auto& row : s.top) {
      std::vector<std::pair<int32_t, float>> r;
      r.reserve(row.size());
      for (const auto& [id, p] : row) r.emplace_back(static_cast<int32_t>(id), p);
      d.top.push_back(std::move(r));
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::vector<viz::DocScores> score_sample(const models::LmHeadModel& model, const viz::Sample& sample, int64_t top_k,
                                         at::ScalarType compute) {
  std::vector<std::vector<int64_t>> docs;
  docs.reserve(sample.docs.size());
  for (const auto& d : sample.docs) docs.emplace_back(d.tokens.begin(), d.tokens.end());
  return to_viz_scores(eval::score_tokens(model, docs, top_k, compute));
}

VizHook::VizHook(const viz::VizConfig& config, data::TextData& data, int64_t max_seq_len, uint64_t seed,
                 at::ScalarType compute, int64_t num_train_steps, std::string run_dir, bool progress)
    : config_(config),
      data_(data),
      max_seq_len_(max_seq_len),
      seed_(seed),
      compute_(compute),
      num_steps_(num_train_steps),
      path_((std::filesystem::path(run_dir) / viz::kTokenProbsFile).string()),
      progress_(progress) {}

VizHook::~VizHook() = default;

void VizHook::at_start(const TrainerState& state) {
  sample_ = viz::validation_sample(data_, config_, seed_, max_seq_len_);
  if (!sample_ || sample_->docs.empty()) {
    std::fprintf(stderr,
                 "warning: trainer.viz: %s, so no token-probability view (give data.validation_urls, or set "
                 "trainer.viz.steps 0)\n",
                 sample_ ? "the validation set has no document of 2 tokens or more" : "no validation set");
    sample_.reset();
    return;
  }
  if (!data_.tokenizer()) {
    std::fprintf(stderr, "warning: trainer.viz: no tokenizer to show tokens with, so no token-probability view\n");
    sample_.reset();
    return;
  }
  const nlohmann::ordered_json docs =
      viz::docs_record(sample_->source, config_.top_k, sample_->docs, *data_.tokenizer());
  writer_ = std::make_unique<viz::TokenProbsWriter>(path_, docs);
  if (writer_->existed() && writer_->existing_docs() != nlohmann::json::parse(docs.dump())) {
    // Steps of another sample would not line up with the file's documents: leave the file as it is.
    std::fprintf(stderr,
                 "warning: trainer.viz: %s holds another sample (trainer.viz or trainer.seed changed since it was "
                 "begun), so this run records no token probabilities; move the file away to begin a new view\n",
                 path_.c_str());
    writer_.reset();
    return;
  }
  // Records of the steps this run does again no longer count (the reader's rule), that of this step included: it is
  // written again when it is one of the view's steps, or was recorded (the end of a shorter run).
  const bool had = writer_->has_step(state.step);
  if (writer_->existed()) writer_->resume_at(state.step);
  if ((state.step % config_.steps == 0 || had) && state.step < num_steps_) score(state);
}

void VizHook::after_step(const StepInfo&, TrainerState& state) {
  if (state.step < num_steps_) score(state);  // the last step's is at_end's
}

void VizHook::at_end(TrainerState& state) {
  score(state);
  if (progress_ && scorings_ > 0) {
    std::fprintf(stderr, "token probabilities: %lld scorings of %zu documents in %.2f s (%s)\n", (long long)scorings_,
                 sample_->docs.size(), seconds_, path_.c_str());
  }
}

void VizHook::score(const TrainerState& state) {
  if (!writer_) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<viz::DocScores> scores = score_sample(*state.model, *sample_, config_.top_k, compute_);
  writer_->append(viz::step_record(state.step, scores, *data_.tokenizer()));
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++scorings_;
}

}  // namespace levanter::trainer
