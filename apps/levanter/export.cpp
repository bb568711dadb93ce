// `levanter export --config FILE --checkpoint PATH --output DIR [--dtype f32|bf16] [--overwrite]`: a checkpoint
// as a Hugging Face model directory (config.json, model.safetensors, tokenizer files) that transformers loads
// with AutoModelForCausalLM.from_pretrained(DIR). See docs/interop.md.
#include <cstdio>

#include "command.h"
#include "levanter/compat/hf/hf_checkpoint.h"
#include "levanter/data/text.h"
#include "levanter/trainer/trainer.h"

namespace {

std::function<int()> setup(CLI::App& app) {
  struct Args {
    std::string config, checkpoint, output, dtype = "f32", format = "safetensors";
    bool overwrite = false;
    int64_t max_shard_size = 5'000'000'000;
  };
  auto a = std::make_shared<Args>();
  app.add_option("--config,-c", a->config, "The config the model was trained with (model and data sections)")
      ->required();
  app.add_option("--checkpoint", a->checkpoint, "A checkpoint directory (step-N) or a base path (its newest)")
      ->required();
  app.add_option("--output,-o", a->output, "The model directory to write")->required();
  app.add_option("--dtype", a->dtype, "Weights as f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16", "bfloat16", "float32"}));
  app.add_option("--max_shard_size", a->max_shard_size, "Bytes per safetensors file before sharding (5e9)");
  app.add_option("--format", a->format, "Weights as safetensors (model.safetensors) or torch (pytorch_model.bin)")
      ->check(CLI::IsMember({"safetensors", "torch"}));
  app.add_flag("--overwrite", a->overwrite, "Replace an existing non-empty output directory");
  app.allow_extras();
  return [a, &app] {
    auto cfg = levanter::trainer::load_train_config(a->config, app.remaining());
    std::string from;
    auto model = levanter::trainer::load_model_from_checkpoint(cfg, a->checkpoint, &from);
    levanter::compat::hf::ExportOptions o;
    o.output = a->output;
    o.overwrite = a->overwrite;
    o.max_shard_bytes = a->max_shard_size;
    o.tokenizer_path = levanter::data::resolve_tokenizer_path(cfg.data.tokenizer);
    if (a->dtype == "bf16" || a->dtype == "bfloat16") o.dtype = at::kBFloat16;
    if (a->format == "torch") o.format = levanter::compat::hf::ExportOptions::Format::kTorch;
    auto files = levanter::compat::hf::export_model(*model, o);
    std::printf("exported %s to %s:", from.c_str(), a->output.c_str());
    for (const auto& f : files) std::printf(" %s", f.c_str());
    std::printf("\n");
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(export_cmd, "export", "Write a checkpoint as a Hugging Face model directory", setup);
