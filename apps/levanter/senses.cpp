// `levanter senses`: what each sense vector of a Backpack model predicts (Hewitt et al. 2023, section 5). A
// Backpack's output is a weighted sum of the sense vectors of the tokens in context, so each sense vector can be
// read alone by scoring it against the vocabulary (its "next-token logits"): the tokens it pushes up and down.
//
//   levanter senses --config config/backpack_nano.yaml --checkpoint checkpoints/<run id> --word bank [--word ...]
//                   [--top_k 8] [--no_space] [--json]
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "command.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/models/backpack/backpack.h"
#include "levanter/trainer/trainer.h"

namespace {

using levanter::data::TokenId;
using levanter::data::Tokenizer;

struct Args {
  std::string config, checkpoint;
  std::vector<std::string> words;
  int64_t top_k = 8;
  bool no_space = false, json = false;
};

// A token's text; a byte-level piece that is not UTF-8 on its own shows as U+FFFD (as Hugging Face decodes it).
std::string text(const Tokenizer& tok, int64_t id) {
  levanter::data::DecodeOptions o;
  o.replace_invalid_utf8 = true;
  return tok.decode(std::vector<TokenId>{static_cast<TokenId>(id)}, o);
}
// ... as a JSON string: quotes make leading spaces and control characters visible.
std::string show(const Tokenizer& tok, int64_t id) { return nlohmann::json(text(tok, id)).dump(); }

std::function<int()> setup(CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("--config,-c", a->config, "The config the model was trained with")->required();
  app.add_option("--checkpoint", a->checkpoint, "A checkpoint directory (step-N) or a base path (its newest)")
      ->required();
  app.add_option("--word,-w", a->words, "A word (repeat for several); each of its tokens is shown")->required();
  app.add_option("--top_k", a->top_k, "Tokens listed per sense and direction")->capture_default_str();
  app.add_flag("--no_space", a->no_space,
               "Tokenize the word as given (default: with a leading space, as a word inside a sentence)");
  app.add_flag("--json", a->json, "One JSON line per token instead of text");
  app.allow_extras();
  return [a, &app] {
    auto cfg = levanter::trainer::load_train_config(a->config, app.remaining());
    auto model = levanter::trainer::load_model_from_checkpoint(cfg, a->checkpoint);
    auto* backpack = dynamic_cast<levanter::models::BackpackLMHeadModel*>(model.get());
    if (!backpack) {
      throw std::invalid_argument("model type '" + cfg.model.type() +
                                  "' has no sense vectors: `levanter senses` reads Backpack models (model.type: "
                                  "backpack)");
    }
    Tokenizer tok = Tokenizer::from_file(levanter::data::resolve_tokenizer_path(cfg.data.tokenizer));
    const int64_t V = backpack->Vocab().size, k = std::max<int64_t>(1, std::min(a->top_k, V));
    at::NoGradGuard no_grad;
    for (const std::string& word : a->words) {
      std::vector<TokenId> ids = tok.encode(a->no_space ? word : " " + word);
      if (ids.empty()) throw std::invalid_argument("'" + word + "' has no tokens");
      for (TokenId id : ids) {
        haliax::NamedArray one(at::full({1, 1}, static_cast<int64_t>(id), at::kLong),
                               {haliax::Axis("batch", 1), haliax::Axis("position", 1)});
        // (senses, vocab) in f32
        at::Tensor scores = haliax::rearrange(backpack->sense_logits(one), {"batch", "position", "senses", "vocab"})
                                .array()
                                .to(at::kFloat)
                                .reshape({-1, V});
        auto [top_v, top_i] = scores.topk(k, 1, /*largest=*/true, /*sorted=*/true);
        auto [bot_v, bot_i] = scores.topk(k, 1, /*largest=*/false, /*sorted=*/true);
        nlohmann::ordered_json row;
        row["word"] = word;
        row["token"] = text(tok, id);
        row["id"] = id;
        row["senses"] = nlohmann::json::array();
        if (!a->json) {
          std::printf(
              "%s (token %d of %s): %lld senses; the %lld tokens each sense scores highest (+) and lowest (-)\n",
              show(tok, id).c_str(), static_cast<int>(id), nlohmann::json(word).dump().c_str(),
              static_cast<long long>(scores.size(0)), static_cast<long long>(k));
        }
        for (int64_t s = 0; s < scores.size(0); ++s) {
          nlohmann::ordered_json sense;
          sense["sense"] = s;
          std::string plus, minus;
          for (int64_t j = 0; j < k; ++j) {
            const int64_t t = top_i[s][j].item<int64_t>(), b = bot_i[s][j].item<int64_t>();
            sense["top"].push_back({{"id", t}, {"token", text(tok, t)}, {"score", top_v[s][j].item<double>()}});
            sense["bottom"].push_back({{"id", b}, {"token", text(tok, b)}, {"score", bot_v[s][j].item<double>()}});
            plus += (j ? " " : "") + show(tok, t);
            minus += (j ? " " : "") + show(tok, b);
          }
          if (!a->json)
            std::printf("  sense %2lld  + %s\n            - %s\n", (long long)s, plus.c_str(), minus.c_str());
          row["senses"].push_back(sense);
        }
        if (a->json) std::cout << row.dump() << "\n";
      }
    }
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(senses, "senses", "What each sense vector of a Backpack model predicts, for given words", setup);
