// `levanter sample`: text from a trained model (a checkpoint with its config, or a Hugging Face directory).
//
//   levanter sample --config C --checkpoint P --prompt "It is a truth" [--max_new_tokens N] [--temperature T]
//                   [--top_k K] [--top_p P] [--seed S]
//   levanter sample --hf DIR --prompts prompts.jsonl            one {"prompt", "completion", "tokens"} line each
//
// One prompt streams its continuation to stdout as it is generated; several (--prompts FILE.jsonl, field
// "text" or "prompt") are generated as one batch and written as JSON lines. --temperature 0 is greedy.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "command.h"
#include "levanter/compat/hf/hf_checkpoint.h"
#include "levanter/data/jsonl_reader.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/inference/generate.h"
#include "levanter/models/model_config.h"
#include "levanter/trainer/trainer.h"

namespace {

namespace fs = std::filesystem;
using levanter::data::Tokenizer;

struct Args {
  std::string config, checkpoint, hf, prompt, prompts;
  levanter::inference::GenerateOptions gen;
  uint64_t seed = 0;
  bool no_eos = false;
};

// The model and its tokenizer, from a checkpoint + config or from a Hugging Face directory.
std::pair<std::unique_ptr<levanter::models::LmHeadModel>, Tokenizer> load(const Args& a,
                                                                          const std::vector<std::string>& overrides) {
  if (!a.hf.empty()) {
    namespace hf = levanter::compat::hf;
    hf::ModelDir d = hf::read_model_dir(a.hf);
    levanter::models::ModelConfig mc(hf::config_from_dir(d));
    auto model = mc->build(haliax::Axis("vocab", d.config.value("vocab_size", int64_t{0})), haliax::random::Key(0));
    hf::load_into(*model, d);
    return {std::move(model), Tokenizer::from_file((fs::path(a.hf) / "tokenizer.json").string())};
  }
  if (a.config.empty() || a.checkpoint.empty())
    throw std::invalid_argument("give --hf DIR, or --config and --checkpoint");
  auto cfg = levanter::trainer::load_train_config(a.config, overrides);
  auto model = levanter::trainer::load_model_from_checkpoint(cfg, a.checkpoint);
  return {std::move(model), Tokenizer::from_file(levanter::data::resolve_tokenizer_path(cfg.data.tokenizer))};
}

std::vector<std::string> read_prompts(const Args& a) {
  std::vector<std::string> out;
  if (!a.prompt.empty()) out.push_back(a.prompt);
  if (!a.prompts.empty()) {
    auto lines = levanter::data::open_lines(a.prompts);
    for (std::string_view line; lines->next(line);) {
      if (levanter::data::is_blank(line)) continue;
      auto j = nlohmann::json::parse(line, nullptr, false);
      const char* key = j.is_object() && j.contains("prompt") ? "prompt" : "text";
      out.push_back(levanter::data::jsonl_text_field(line, key, a.prompts, lines->line_number()));
    }
  }
  if (out.empty()) throw std::invalid_argument("no prompt: give --prompt TEXT or --prompts FILE.jsonl");
  return out;
}

// Prints a single row's text as it grows, holding back an incomplete UTF-8 character.
class Streamer {
 public:
  explicit Streamer(const Tokenizer& tok) : tok_(tok) {}
  void add(int64_t token) {
    ids_.push_back(static_cast<levanter::data::TokenId>(token));
    std::string text = tok_.decode(ids_);
    if (text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0) return;  // wait for the rest
    if (text.size() > printed_) std::fwrite(text.data() + printed_, 1, text.size() - printed_, stdout);
    std::fflush(stdout);
    printed_ = text.size();
  }
  // At the end: whatever is still held back (a character the generation never completed).
  void finish() {
    std::string text = tok_.decode(ids_);
    if (text.size() > printed_) std::fwrite(text.data() + printed_, 1, text.size() - printed_, stdout);
    printed_ = text.size();
  }

 private:
  const Tokenizer& tok_;
  std::vector<levanter::data::TokenId> ids_;
  size_t printed_ = 0;
};

std::function<int()> setup(CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("--config,-c", a->config, "The config the model was trained with (model and data sections)");
  app.add_option("--checkpoint", a->checkpoint, "A checkpoint directory (step-N) or a base path (its newest)");
  app.add_option("--hf", a->hf, "A Hugging Face model directory (instead of --config and --checkpoint)");
  app.add_option("--prompt,-p", a->prompt, "The prompt text");
  app.add_option("--prompts", a->prompts,
                 "A JSONL file of prompts (field \"prompt\" or \"text\"), generated as a batch");
  app.add_option("--max_new_tokens", a->gen.max_new_tokens, "Tokens to generate per prompt")->capture_default_str();
  app.add_option("--temperature", a->gen.temperature, "Sampling temperature; 0 is greedy")->capture_default_str();
  app.add_option("--top_k", a->gen.top_k, "Sample from the k most likely tokens (0: all)")->capture_default_str();
  app.add_option("--top_p", a->gen.top_p, "Sample from the most likely tokens up to this probability")
      ->capture_default_str();
  app.add_option("--seed", a->seed, "Random seed (the same seed gives the same text)")->capture_default_str();
  app.add_flag("--no_eos", a->no_eos, "Do not stop at the tokenizer's end-of-sequence token");
  app.allow_extras();
  return [a, &app] {
    auto [model, tok] = load(*a, app.remaining());
    levanter::inference::GenerateOptions gen = a->gen;
    if (!a->no_eos && tok.eos_id()) gen.eos_id = *tok.eos_id();
    std::vector<std::string> texts = read_prompts(*a);
    std::vector<std::vector<int64_t>> prompts;
    for (const std::string& t : texts) {
      auto ids = tok.encode(t);
      if (ids.empty() && tok.bos_id()) ids.push_back(*tok.bos_id());
      prompts.emplace_back(ids.begin(), ids.end());
    }
    const bool stream = prompts.size() == 1;
    Streamer streamer(tok);
    if (stream) std::fwrite(texts[0].data(), 1, texts[0].size(), stdout);
    const auto t0 = std::chrono::steady_clock::now();
    auto out =
        levanter::inference::generate(*model, prompts, gen, haliax::random::Key(a->seed), [&](size_t, int64_t t) {
          if (stream) streamer.add(t);
        });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    size_t generated = 0;
    for (const auto& o : out) generated += o.size();
    std::fprintf(stderr, "sample: %zu prompts, %zu new tokens in %.3f s (%.1f tokens/s)\n", out.size(), generated,
                 seconds, static_cast<double>(generated) / seconds);
    if (stream) {
      streamer.finish();
      std::printf("\n");
      return 0;
    }
    for (size_t i = 0; i < out.size(); ++i) {
      std::vector<levanter::data::TokenId> ids(out[i].begin(), out[i].end());
      nlohmann::ordered_json row;
      row["prompt"] = texts[i];
      row["completion"] = tok.decode(ids);
      row["tokens"] = out[i];
      std::cout << row.dump() << "\n";
    }
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(sample, "sample", "Generate text from a checkpoint or a Hugging Face directory", setup);
