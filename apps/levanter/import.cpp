// `levanter import DIR --output BASE_PATH`: a Hugging Face model directory (config.json + safetensors) as a
// checkpoint BASE_PATH/step-0 holding its parameters, for `trainer.initialize_from` or `levanter eval`. The
// printed model section is what the training config needs. See docs/interop.md.
#include <cstdio>
#include <iostream>

#include "command.h"
#include "levanter/checkpoint/checkpoint.h"
#include "levanter/compat/hf/hf_checkpoint.h"
#include "levanter/config/config.h"
#include "levanter/models/model_config.h"

namespace {

std::function<int()> setup(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  app.add_option("dir", *dir, "A Hugging Face model directory")->required();
  app.add_option("--output,-o", *output, "Checkpoint base path; the checkpoint is written to <output>/step-0")
      ->required();
  return [dir, output] {
    namespace hf = levanter::compat::hf;
    hf::ModelDir d = hf::read_model_dir(*dir);
    levanter::models::ModelConfig mc(hf::config_from_dir(d));
    const int64_t vocab = d.config.value("vocab_size", int64_t{0});
    if (vocab <= 0) throw std::runtime_error(*dir + "/config.json: no positive \"vocab_size\"");
    auto model = mc->build(haliax::Axis("vocab", vocab), haliax::random::Key(0));
    hf::load_into(*model, d);
    haliax::StateDict params;
    for (const auto& [k, t] : haliax::nn::to_state_dict(*model)) params.emplace_back(k, t.detach().clone());
    nlohmann::json md;
    md["imported_from"] = *dir;
    md["model"] = levanter::config::dump(mc.to_yaml());
    std::string path = levanter::checkpoint::save_checkpoint(*output, 0, {{"model", params}}, md);
    std::printf("imported %s (%s, vocabulary %lld) to %s\n", dir->c_str(), mc.type().c_str(), (long long)vocab,
                path.c_str());
    std::printf("model section for the training config:\nmodel:\n");
    std::string yaml = levanter::config::dump(mc.to_yaml());
    for (size_t start = 0; start < yaml.size();) {
      size_t end = yaml.find('\n', start);
      if (end == std::string::npos) end = yaml.size();
      std::printf("  %s\n", yaml.substr(start, end - start).c_str());
      start = end + 1;
    }
    return 0;
  };
}

}  // namespace

LEVANTER_COMMAND(import_cmd, "import", "Convert a Hugging Face model directory into a checkpoint", setup);
