// `levanter viz`: the token-probability view of a checkpoint as one self-contained HTML page (docs/visualization.md).
//
//   levanter viz --config C --checkpoint A [--compare B] [--data FILE.jsonl] --output page.html
//                [--num_docs N] [--max_tokens T] [--top_k K] [--section.key value ...]
//   levanter viz --run logs/<run id> --output page.html      what training recorded (token_probs.jsonl), every step
//
// The documents: the config's validation sample, chosen as during training (trainer.viz, trainer.seed), or the
// "text" of each line of --data. With --compare, both checkpoints score the same documents and the page colours
// each token by log p_B - log p_A. Levanter's viz_logprobs names are accepted too: --checkpoint_path,
// --comparison_model_path, --path.
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "command.h"
#include "levanter/data/jsonl_reader.h"
#include "levanter/data/text.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/runtime/file_io.h"
#include "levanter/trainer/trainer.h"
#include "levanter/trainer/viz_hook.h"
#include "levanter/viz/page.h"
#include "levanter/viz/sample.h"
#include "levanter/viz/token_probs.h"

namespace {

namespace fs = std::filesystem;
using namespace levanter;

struct Args {
  std::string config, checkpoint, compare, data, output, run;
  std::optional<int64_t> num_docs, max_tokens, top_k;
};

// The documents of --data: the "text" field of each line, tokenized as the config's caches are.
viz::Sample read_documents(const std::string& path, data::TextData& text_data, const viz::VizConfig& vc,
                           int64_t max_len) {
  viz::Sample s;
  s.source = fs::path(path).filename().string();
  const int64_t keep = std::min(vc.max_tokens, max_len);
  auto lines = data::open_lines(path);
  int64_t index = 0;
  for (std::string_view line; lines->next(line);) {
    if (data::is_blank(line)) continue;
    const std::string text = data::jsonl_text_field(line, "text", path, lines->line_number());
    std::vector<int32_t> ids;
    text_data.encoder().encode(text, ids);
    if (static_cast<int64_t>(ids.size()) > keep) ids.resize(static_cast<size_t>(keep));
    const int64_t i = index++;
    if (ids.size() < 2) {
      std::fprintf(stderr, "warning: %s:%llu: fewer than 2 tokens, nothing to predict: skipped\n", path.c_str(),
                   (unsigned long long)lines->line_number());
      continue;
    }
    s.docs.push_back({i, std::move(ids)});
    if (static_cast<int64_t>(s.docs.size()) >= vc.num_docs) break;
  }
  if (s.docs.empty()) throw std::invalid_argument(path + ": no document of 2 tokens or more");
  return s;
}

std::function<int()> setup(CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("--config,-c", a->config, "The config the model was trained with (model and data sections)");
  app.add_option("--checkpoint,--checkpoint_path", a->checkpoint,
                 "A checkpoint directory (step-N) or a base path (its newest complete one)");
  app.add_option(
      "--run", a->run,
      "Instead of a checkpoint: a run directory (or its token_probs.jsonl), to show every step that training "
      "recorded (trainer.viz)");
  app.add_option("--compare,--comparison_model_path", a->compare,
                 "A second checkpoint (B): colour each token by log p_B - log p_A");
  app.add_option("--data", a->data,
                 "A JSONL file whose \"text\" fields are the documents (default: the config's "
                 "validation sample, as trainer.viz chooses it)");
  app.add_option("--output,-o,--path", a->output, "The HTML page to write")->required();
  app.add_option("--num_docs", a->num_docs, "Documents to show (default: trainer.viz.num_docs)");
  app.add_option("--max_tokens", a->max_tokens, "Tokens kept from the start of each (default: trainer.viz.max_tokens)");
  app.add_option("--top_k", a->top_k, "Alternatives per token in the tooltip (default: trainer.viz.top_k)");
  app.allow_extras();
  return [a, &app] {
    if (!a->run.empty()) {
      if (!a->checkpoint.empty() || !a->compare.empty() || !a->data.empty()) {
        throw std::invalid_argument(
            "--run shows what training recorded: give it without --checkpoint, --compare, --data");
      }
      const fs::path file = fs::is_directory(a->run) ? fs::path(a->run) / viz::kTokenProbsFile : fs::path(a->run);
      const std::string title = "Token probabilities: " +
                                (fs::is_directory(a->run) ? fs::path(a->run) : file.parent_path()).filename().string();
      nlohmann::json page = viz::read_page_data(file.string(), title);
      runtime::write_file_atomic(a->output, viz::token_view_page(page));
      std::fprintf(stderr, "wrote %s (%zu documents, %zu steps)\n", a->output.c_str(), page["docs"].size(),
                   page["series"].size());
      return 0;
    }
    if (a->config.empty() || a->checkpoint.empty()) {
      throw std::invalid_argument("give --config and --checkpoint (or --run DIR for what training recorded)");
    }
    auto cfg = trainer::load_train_config(a->config, app.remaining());
    viz::VizConfig vc = cfg.trainer.viz;
    if (a->num_docs) vc.num_docs = *a->num_docs;
    if (a->max_tokens) vc.max_tokens = *a->max_tokens;
    if (a->top_k) vc.top_k = *a->top_k;
    vc.validate("levanter viz");
    data::TextData text_data(cfg.data);
    if (!text_data.tokenizer()) throw std::invalid_argument("the config's data section has no tokenizer");
    const int64_t max_len = cfg.model->max_seq_len();
    viz::Sample sample;
    if (!a->data.empty()) {
      sample = read_documents(a->data, text_data, vc, max_len);
    } else {
      auto s = viz::validation_sample(text_data, vc, static_cast<uint64_t>(cfg.trainer.seed), max_len);
      if (!s || s->docs.empty()) {
        throw std::invalid_argument("the config has no validation documents to show: give --data FILE.jsonl");
      }
      sample = std::move(*s);
    }
    const auto& tok = *text_data.tokenizer();
    nlohmann::ordered_json docs = viz::docs_record(sample.source, vc.top_k, sample.docs, tok);

    std::vector<viz::Series> series;
    std::vector<std::string> paths{a->checkpoint};
    if (!a->compare.empty()) paths.push_back(a->compare);
    for (size_t i = 0; i < paths.size(); ++i) {
      std::string loaded_from;
      int64_t step = 0;
      const auto t0 = std::chrono::steady_clock::now();
      auto model = trainer::load_model_from_checkpoint(cfg, paths[i], &loaded_from, &step);
      auto scores = trainer::score_sample(*model, sample, vc.top_k, cfg.trainer.mp.compute);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      nlohmann::ordered_json rec = viz::step_record(step, scores, tok);
      const std::string name = fs::path(loaded_from).filename().string();
      const std::string& label = name;  // the page says which is A and which B
      series.push_back({label, step, nlohmann::json::parse(rec["docs"].dump())});
      std::fprintf(stderr, "%s: %zu documents scored in %.2f s\n", loaded_from.c_str(), sample.docs.size(), s);
    }
    std::optional<std::pair<int, int>> compare;
    if (paths.size() > 1) compare = std::make_pair(0, 1);
    const std::string title = "Token probabilities: " + fs::path(a->config).filename().string();
    nlohmann::json page = viz::page_data(nlohmann::json::parse(docs.dump()), std::move(series), title, compare);
    const std::string html = viz::token_view_page(page);
    runtime::write_file_atomic(a->output, html);
    std::fprintf(stderr, "wrote %s (%zu documents)\n", a->output.c_str(), sample.docs.size());
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(viz, "viz", "Write the token-probability view of a checkpoint (or two) as an HTML page", setup);
