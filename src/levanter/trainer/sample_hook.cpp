#include "levanter/trainer/sample_hook.h"

#include <stdexcept>

#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/inference/generate.h"
#include "levanter/tracker/tracker.h"

namespace levanter::trainer {

SampleHook::SampleHook(const inference::SampleConfig& config, const data::Tokenizer& tokenizer, haliax::random::Key key,
                       tracker::Tracker& tracker)
    : config_(config), tokenizer_(tokenizer), key_(key), tracker_(tracker) {
  std::vector<std::string> texts = config_.prompts;
  if (texts.empty()) texts.emplace_back();
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int64_t> ids;
    for (auto id : tokenizer_.encode(texts[i])) ids.push_back(id);
    if (ids.empty()) {
      if (!tokenizer_.bos_id()) {
        throw std::invalid_argument("trainer.sample.prompts[" + std::to_string(i) +
                                    "]: an empty prompt needs a tokenizer with a BOS token; give some text");
      }
      ids.push_back(*tokenizer_.bos_id());
    }
    prompts_.push_back(std::move(ids));
  }
}

std::vector<std::string> SampleHook::samples(const TrainerState& state) const {
  inference::GenerateOptions o;
  o.max_new_tokens = config_.max_new_tokens;
  o.temperature = config_.temperature;
  o.top_k = config_.top_k;
  o.top_p = config_.top_p;
  if (tokenizer_.eos_id()) o.eos_id = *tokenizer_.eos_id();
  const int64_t positions = state.model->Pos().size;
  for (size_t i = 0; i < prompts_.size(); ++i) {
    if (static_cast<int64_t>(prompts_[i].size()) + o.max_new_tokens > positions) {
      throw std::invalid_argument("trainer.sample: prompt " + std::to_string(i) + " (" +
                                  std::to_string(prompts_[i].size()) + " tokens) plus max_new_tokens " +
                                  std::to_string(o.max_new_tokens) + " exceeds the model's " +
                                  std::to_string(positions) + " positions");
    }
  }
  const auto out = inference::generate(*state.model, prompts_, o, key_.fold_in(static_cast<uint64_t>(state.step)));
  std::vector<std::string> texts;
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<data::TokenId> ids;
    // An unconditional sample's BOS is not text.
    const bool bos_only = config_.prompts.empty() || config_.prompts[i].empty();
    if (!bos_only) {
      for (auto id : prompts_[i]) ids.push_back(static_cast<data::TokenId>(id));
    }
    for (auto id : out[i]) ids.push_back(static_cast<data::TokenId>(id));
    texts.push_back(tokenizer_.decode(ids));
  }
  return texts;
}

void SampleHook::log(const TrainerState& state) {
  if (last_logged_ == state.step) return;
  tracker::Metrics m;
  const auto texts = samples(state);
  for (size_t i = 0; i < texts.size(); ++i) m.emplace_back("samples/" + std::to_string(i), texts[i]);
  tracker_.log(m, state.step);
  last_logged_ = state.step;
}

void SampleHook::after_step(const StepInfo&, TrainerState& state) { log(state); }

void SampleHook::at_end(TrainerState& state) { log(state); }

}  // namespace levanter::trainer
