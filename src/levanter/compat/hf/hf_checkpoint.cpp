#include "levanter/compat/hf/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include "levanter/checkpoint/safetensors.h"
#include "levanter/data/tokenizer/tokenizer.h"
#include "levanter/models/hf_adapter.h"
#include "levanter/models/model_config.h"
#include "levanter/runtime/file_io.h"

namespace levanter::compat::hf {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

std::unique_ptr<models::HfAdapter> adapter_of(const models::LmConfig& config) {
  std::unique_ptr<models::HfAdapter> a = config.hf_adapter();
  if (!a) {
    throw std::invalid_argument("model type '" + config.model_type() +
                                "' has no Hugging Face mapping (export and import support: gpt2)");
  }
  return a;
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kDouble:
      return "float64";
    default:
      throw std::invalid_argument(std::string("cannot export tensors of dtype ") + c10::toString(t));
  }
}

std::string token_text(const data::Tokenizer& tok, std::optional<data::TokenId> id) {
  if (!id) return "";
  return tok.id_to_token(*id).value_or("");
}

// The tokenizer files: tokenizer.json as it is, the configs transformers reads, and vocab.json / merges.txt
// for a BPE model (what the slow GPT2Tokenizer reads).
void write_tokenizer_files(const std::string& dir, const std::string& tokenizer_path, int64_t max_len,
                           std::vector<std::string>& written) {
  const std::string text = runtime::read_small_file(tokenizer_path);
  const data::Tokenizer tok = data::Tokenizer::from_json(text, tokenizer_path);
  const json tj = json::parse(text);
  runtime::write_file_atomic(dir + "/tokenizer.json", text);
  written.push_back("tokenizer.json");
  const json& model = tj.at("model");
  const bool bpe = model.value("type", "") == "BPE" && model.contains("vocab") && model.contains("merges");
  const bool byte_level = tj.contains("pre_tokenizer") && tj["pre_tokenizer"].is_object() &&
                          tj["pre_tokenizer"].value("type", "") == "ByteLevel";
  if (bpe) {
    runtime::write_file_atomic(dir + "/vocab.json", model["vocab"].dump() + "\n");
    std::string merges = "#version: 0.2\n";
    for (const json& m : model["merges"]) {
      merges += m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>();
      merges += "\n";
    }
    runtime::write_file_atomic(dir + "/merges.txt", merges);
    written.push_back("vocab.json");
    written.push_back("merges.txt");
  }
  ordered_json special;
  if (auto b = token_text(tok, tok.bos_id()); !b.empty()) special["bos_token"] = b;
  if (auto e = token_text(tok, tok.eos_id()); !e.empty()) special["eos_token"] = e;
  if (auto u = token_text(tok, tok.unk_id()); !u.empty())
    special["unk_token"] = u;
  else if (special.contains("eos_token"))
    special["unk_token"] = special["eos_token"];  // as HF's gpt2
  ordered_json cfg = special;
  cfg["add_prefix_space"] = false;
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["model_max_length"] = max_len;
  cfg["tokenizer_class"] = bpe && byte_level ? "GPT2Tokenizer" : "PreTrainedTokenizerFast";
  runtime::write_file_atomic(dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
  runtime::write_file_atomic(dir + "/special_tokens_map.json", special.dump(2) + "\n");
  written.push_back("tokenizer_config.json");
  written.push_back("special_tokens_map.json");
}

std::string shard_name(const char* stem, const char* ext, size_t i, size_t n) {
  char name[96];
  std::snprintf(name, sizeof(name), "%s-%05zu-of-%05zu.%s", stem, i + 1, n, ext);
  return name;
}

// model.safetensors, or shards of at most max_bytes each (a tensor larger than that gets a shard of its own).
void write_weights(const std::string& dir, const haliax::StateDict& tensors, int64_t max_bytes,
                   std::vector<std::string>& written) {
  const checkpoint::StringMap meta{{"format", "pt"}};
  std::vector<haliax::StateDict> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t n = static_cast<int64_t>(t.numel() * t.element_size());
    if (!shards.back().empty() && shard_bytes + n > max_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(name, t);
    shard_bytes += n;
    total += n;
  }
  if (shards.size() == 1) {
    checkpoint::save_safetensors(dir + "/model.safetensors", tensors, meta);
    written.push_back("model.safetensors");
    return;
  }
  ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shard_name("model", "safetensors", i, shards.size());
    checkpoint::save_safetensors(dir + "/" + name, shards[i], meta);
    written.push_back(name);
    for (const auto& [tensor, t] : shards[i]) index["weight_map"][tensor] = name;
  }
  runtime::write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  written.push_back("model.safetensors.index.json");
}

// Moves the finished temporary directory to `output`, replacing an existing one only when asked.
void commit_directory(const std::string& tmp, const std::string& output, bool overwrite) {
  std::string aside;
  if (fs::exists(output)) {
    if (!fs::is_empty(output)) {
      if (!overwrite) throw std::runtime_error(output + ": exists and is not empty (pass --overwrite to replace it)");
      aside = output + ".old-" + std::to_string(::getpid());
      runtime::rename_path(output, aside);
    } else {
      fs::remove(output);
    }
  }
  runtime::rename_path(tmp, output);
  runtime::fsync_parent(output);
  if (!aside.empty()) fs::remove_all(aside);
}

void check_output(const std::string& output, bool overwrite) {
  if (output.empty()) throw std::invalid_argument("export: no output directory given");
  if (fs::exists(output) && !fs::is_directory(output))
    throw std::runtime_error(output + ": exists and is not a directory");
  if (fs::exists(output) && !fs::is_empty(output) && !overwrite) {
    throw std::runtime_error(output + ": exists and is not empty (pass --overwrite to replace it)");
  }
}

}  // namespace

void save_torch_state_dict(const std::string& path, const haliax::StateDict& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.contiguous());
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
  runtime::write_file_atomic(path, std::string_view(bytes.data(), bytes.size()));
}

haliax::StateDict load_torch_state_dict(const std::string& path) {
  std::shared_ptr<runtime::Buffer> buf = runtime::read_file(path);
  c10::IValue v;
  try {
    v = torch::jit::pickle_load(std::vector<char>(buf->data(), buf->data() + buf->size()));
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not a torch.save'd state dict: " + std::string(e.what()).substr(0, 200));
  }
  if (!v.isGenericDict()) throw std::runtime_error(path + ": holds a " + v.tagKind() + ", not a dict of tensors");
  haliax::StateDict out;
  for (const auto& kv : v.toGenericDict()) {
    if (!kv.key().isString() || !kv.value().isTensor()) {
      throw std::runtime_error(path + ": an entry that is not a name and a tensor (" + kv.key().tagKind() + ")");
    }
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  return out;
}

std::vector<std::string> export_model(models::LmHeadModel& model, const ExportOptions& o) {
  check_output(o.output, o.overwrite);
  const std::unique_ptr<models::HfAdapter> adapter = adapter_of(model.config());
  ordered_json config;
  config["architectures"] = {adapter->hf_architecture()};
  config["model_type"] = adapter->hf_model_type();
  const ordered_json architecture = adapter->to_hf_config(model.config());
  for (const auto& [k, v] : architecture.items()) config[k] = v;
  config["vocab_size"] = model.Vocab().size;

  haliax::StateDict tensors = adapter->to_hf_state_dict(model);
  at::ScalarType dtype = at::kFloat;
  for (auto& [name, t] : tensors) {
    if (!at::isFloatingType(t.scalar_type())) continue;
    if (o.dtype) t = t.to(*o.dtype);
    dtype = t.scalar_type();
  }
  config["torch_dtype"] = dtype_name(dtype);

  std::vector<std::string> written;
  const fs::path out = fs::path(o.output).lexically_normal();
  const std::string tmp =
      (out.parent_path() / (".tmp-" + out.filename().string() + "-" + std::to_string(::getpid()))).string();
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    ordered_json generation;
    if (!o.tokenizer_path.empty()) {
      const data::Tokenizer tok = data::Tokenizer::from_file(o.tokenizer_path);
      if (static_cast<int64_t>(tok.vocab_size()) != model.Vocab().size) {
        throw std::invalid_argument(o.tokenizer_path + ": the tokenizer has " + std::to_string(tok.vocab_size()) +
                                    " tokens, the model " + std::to_string(model.Vocab().size));
      }
      if (auto b = tok.bos_id()) config["bos_token_id"] = generation["bos_token_id"] = *b;
      if (auto e = tok.eos_id()) config["eos_token_id"] = generation["eos_token_id"] = *e;
    }
    runtime::write_file_atomic(tmp + "/config.json", config.dump(2) + "\n");
    written.push_back("config.json");
    runtime::write_file_atomic(tmp + "/generation_config.json", generation.dump(2) + "\n");
    written.push_back("generation_config.json");
    if (o.format == ExportOptions::Format::kTorch) {
      haliax::StateDict with_aliases = tensors;
      for (const auto& [alias, name] : adapter->tied_parameters()) {
        for (const auto& [n, t] : tensors) {
          if (n == name) with_aliases.emplace_back(alias, t);
        }
      }
      save_torch_state_dict(tmp + "/pytorch_model.bin", with_aliases);
      written.push_back("pytorch_model.bin");
    } else {
      write_weights(tmp, tensors, o.max_shard_bytes, written);
    }
    if (!o.tokenizer_path.empty()) write_tokenizer_files(tmp, o.tokenizer_path, model.config().max_seq_len(), written);
    runtime::fsync_path(tmp);
    commit_directory(tmp, out.string(), o.overwrite);
  } catch (...) {
    fs::remove_all(tmp);
    throw;
  }
  return written;
}

ModelDir read_model_dir(const std::string& path, bool weights) {
  ModelDir d;
  d.path = path;
  const std::string config_path = (fs::path(path) / "config.json").string();
  if (!fs::is_regular_file(config_path)) {
    throw std::runtime_error(path + ": no config.json here: not a Hugging Face model directory");
  }
  try {
    d.config = json::parse(runtime::read_small_file(config_path));
  } catch (const json::exception& e) {
    throw std::runtime_error(config_path + ": not valid JSON: " + e.what());
  }
  if (!weights) return d;
  const fs::path single = fs::path(path) / "model.safetensors", index = fs::path(path) / "model.safetensors.index.json";
  if (fs::is_regular_file(single)) {
    d.weight_files.push_back(single.string());
  } else if (fs::is_regular_file(index)) {
    json idx = json::parse(runtime::read_small_file(index.string()));
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object()) {
      throw std::runtime_error(index.string() + ": no \"weight_map\" object");
    }
    std::set<std::string> seen;
    for (const auto& [tensor, file] : idx["weight_map"].items()) {
      if (seen.insert(file.get<std::string>()).second)
        d.weight_files.push_back((fs::path(path) / file.get<std::string>()).string());
    }
  } else if (fs::is_regular_file(fs::path(path) / "pytorch_model.bin")) {
    d.weight_files.push_back((fs::path(path) / "pytorch_model.bin").string());
  } else if (fs::is_regular_file(fs::path(path) / "pytorch_model.bin.index.json")) {
    json idx = json::parse(runtime::read_small_file((fs::path(path) / "pytorch_model.bin.index.json").string()));
    std::set<std::string> seen;
    for (const auto& [tensor, file] : idx.at("weight_map").items()) {
      if (seen.insert(file.get<std::string>()).second)
        d.weight_files.push_back((fs::path(path) / file.get<std::string>()).string());
    }
  } else {
    throw std::runtime_error(path + ": no model.safetensors, model.safetensors.index.json or pytorch_model.bin here");
  }
  for (const std::string& f : d.weight_files) {
    if (f.size() > 4 && f.compare(f.size() - 4, 4, ".bin") == 0) {
      for (auto& kv : load_torch_state_dict(f)) d.tensors.push_back(std::move(kv));
      continue;
    }
    checkpoint::SafetensorsFile sf = checkpoint::load_safetensors(f);
    for (auto& kv : sf.tensors) d.tensors.push_back(std::move(kv));
  }
  return d;
}

std::unique_ptr<models::LmConfig> config_from_dir(const ModelDir& d) {
  const std::string src = (fs::path(d.path) / "config.json").string();
  const std::string type = d.config.value("model_type", "");
  std::unique_ptr<models::HfAdapter> a = models::hf_adapter_for_hf_type(type);
  if (!a) {
    std::string supported;
    for (const std::string& t : models::model_types()) {
      if (auto family = models::default_model_config(t)->hf_adapter()) {
        supported += (supported.empty() ? "" : ", ") + family->hf_model_type();
      }
    }
    throw std::invalid_argument(src + ": model_type '" + type + "' is not supported (supported: " + supported + ")");
  }
  return a->from_hf_config(d.config, src);
}

void load_into(models::LmHeadModel& model, const ModelDir& d) {
  const std::string src = (fs::path(d.path) / "config.json").string();
  const std::unique_ptr<models::HfAdapter> adapter = adapter_of(model.config());
  const std::string type = d.config.value("model_type", "");
  if (type != adapter->hf_model_type()) {
    throw std::invalid_argument(src + ": model_type is '" + type + "' but the model is " + adapter->hf_model_type());
  }
  // The directory's architecture, read back through our config, must be the model's.
  const ordered_json theirs = adapter->to_hf_config(*adapter->from_hf_config(d.config, src));
  const ordered_json ours = adapter->to_hf_config(model.config());
  static const std::set<std::string> not_architecture{"resid_pdrop", "embd_pdrop", "attn_pdrop", "initializer_range",
                                                      "use_cache"};
  for (const auto& [k, v] : ours.items()) {
    if (not_architecture.count(k) || theirs.value(k, v) == v) continue;
    throw std::invalid_argument(src + ": \"" + k + "\" is " + theirs[k].dump() + " but the model config gives " +
                                v.dump() +
                                " (take the model config from the directory with "
                                "use_hf_model_config: true, or change model.*)");
  }
  const int64_t vocab = d.config.value("vocab_size", int64_t{-1});
  if (vocab != model.Vocab().size) {
    throw std::invalid_argument(src + ": \"vocab_size\" is " + std::to_string(vocab) + " but the tokenizer has " +
                                std::to_string(model.Vocab().size) + " tokens (set data.tokenizer to the directory)");
  }
  adapter->load_hf_state_dict(model, d.tensors, d.weight_files.size() == 1 ? d.weight_files[0] : d.path);
}

}  // namespace levanter::compat::hf
