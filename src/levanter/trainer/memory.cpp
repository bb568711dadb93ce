#include "levanter/trainer/memory.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "levanter/models/lm_loss.h"
#include "levanter/models/lm_model.h"

namespace levanter::trainer {

namespace {

double bytes_of(at::ScalarType t) { return static_cast<double>(c10::elementSize(t)); }

std::string gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), bytes >= 1e11 ? "%.0f GB" : bytes >= 1e9 ? "%.1f GB" : "%.2f GB", bytes / 1e9);
  return buf;
}

std::optional<double> read_number(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return std::nullopt;
  try {
    return std::stod(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

std::string MemoryEstimate::describe() const {
  std::string s = gb(total()) + " (" + std::to_string(parameters) + " parameters: weights " + gb(weights) +
                  ", gradients " + gb(gradients) + ", optimizer state " + gb(optimizer);
  if (compute_copy > 0) s += ", compute-dtype copy " + gb(compute_copy);
  return s + ", activations " + gb(activations) + ", LM head and loss " + gb(loss) + ", temporaries " +
         gb(temporaries) + ", runtime " + gb(runtime) + ")";
}

std::optional<MemoryEstimate> estimate_training_memory(const TrainLmConfig& config, int64_t vocab_size, int processes,
                                                       int model_axis_size) {
  const models::LmConfig& m = config.model.get();
  std::optional<int64_t> n = m.parameter_count(vocab_size);
  if (!n) return std::nullopt;
  const TrainerConfig& tc = config.trainer;
  const double P = static_cast<double>(*n), pb = bytes_of(tc.mp.param), cb = bytes_of(tc.mp.compute);
  MemoryEstimate e;
  e.parameters = *n;
  e.weights = P * pb;
  e.gradients = P * pb;
  const std::string& type = config.optimizer.type.name;
  e.optimizer = P * pb * (type == "lion" ? 1.0 : 2.0);
  if (tc.mp.compute != tc.mp.param) e.compute_copy = 2.0 * P * cb;
  const bool fsdp = processes > 1 && !tc.fsdp_axes().empty();
  if (fsdp) {
    // Pieces of the master weights, of their gradients and of the optimizer state; the whole compute copy (f32 too)
    // and its gradients during the step.
    e.weights /= processes;
    e.gradients /= processes;
    e.optimizer /= processes;
    e.compute_copy = 2.0 * P * cb;
    // Mixed precision: the microbatches' gradients are widened and summed whole in f32 before the exchange.
    if (tc.mp.compute != tc.mp.param) e.gradients += 4.0 * P;
  }
  if (model_axis_size > 1) {
    // Tensor parallelism: the parameters other than the token embeddings (and an untied LM head) are held in
    // model_axis_size pieces, with their gradients, optimizer state and compute copy; the embedding rows (the growth of
    // the count per vocabulary entry, times the vocabulary) stay whole, and so, erring on the safe side, do the
    // activations.
    const std::optional<int64_t> more = m.parameter_count(vocab_size + 1);
    const double embedding = more ? static_cast<double>(*more - *n) * static_cast<double>(vocab_size) : 0.0;
    const double held = (embedding + (P - embedding) / model_axis_size) / P;
    for (double* x : {&e.weights, &e.gradients, &e.optimizer, &e.compute_copy}) *x *= held;
  }
  const int64_t rows =
      tc.per_device_parallelism > 0 ? tc.per_device_parallelism : std::max<int64_t>(1, tc.train_batch_size / processes);
  const double tokens = static_cast<double>(rows) * static_cast<double>(m.max_seq_len());
  e.activations = tokens * m.activation_elements_per_token().value_or(0.0) * cb;
  // The LM head + loss: a block of positions' logits in the compute dtype, written over with their gradient where
  // the fused loss's CPU kernel runs (models::fused_loss_in_place); elsewhere also their f32 copy (the same buffer in
  // f32) and its gradient. The full logits, with the copy and gradient, when the family asks for them (block 0) or
  // Sophia-H differentiates twice.
  const double N = tokens, V = static_cast<double>(vocab_size);
  const std::optional<int64_t> block = m.loss_block_size();
  const bool full = (block && *block == 0) || type == "sophia-h";
  const double loss_rows =
      full ? N
           : static_cast<double>(models::fused_loss_block_rows(block.value_or(0), static_cast<int64_t>(N), vocab_size));
  bool vocab_split = false;
  if (model_axis_size > 1) {
    for (const std::string& a : tc.model_axes()) vocab_split = vocab_split || a == models::kVocabAxis;
  }
  const bool in_place = !full && !vocab_split && models::fused_loss_in_place(tc.mp.compute);
  e.loss = loss_rows * V * (in_place ? cb : cb == 4.0 ? 8.0 : 8.0 + 2.0 * cb);
  // Measured on GPT-2 124M (fp32, B4 T64) with the caching allocator's free lists per size class: the steps held
  // about one parameter-sized buffer more than the state above (gradient-norm and update temporaries, the tied LM
  // head's f32 gradient, those free lists); the arena allocator holds less, so this errs on the safe side. Checkpoints
  // are written from the live tensors and add nothing. Under mixed precision with one microbatch in one process the f32
  // gradients are never made (the optimizer reads the compute copy's): the estimate keeps them, erring on the safe
  // side.
  e.temporaries = P * pb;
  e.runtime = 250e6;  // measured: a 16-wide 1-layer GPT-2's process peaks at 270 MB (docs/reliability.md)
  return e;
}

std::optional<double> available_memory_bytes() {
  std::optional<double> avail;
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream ss(line.substr(13));
      double kb = 0;
      if (ss >> kb) avail = kb * 1024.0;
    }
  }
  auto lower = [&](std::optional<double> limit, std::optional<double> used) {
    if (!limit || *limit > 1e18) return;  // v1 reports "no limit" as a huge number
    const double left = *limit - used.value_or(0.0);
    if (!avail || left < *avail) avail = left < 0 ? 0.0 : left;
  };
  lower(read_number("/sys/fs/cgroup/memory.max"), read_number("/sys/fs/cgroup/memory.current"));
  lower(read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes"));
  return avail;
}

void check_memory(const MemoryEstimate& estimate, double available) {
  if (estimate.total() <= available) return;
  throw config::ConfigError(
      "the run needs about " + estimate.describe() + " but this machine has " + gb(available) +
      " available: reduce the model (model.hidden_dim, model.num_layers), the microbatch (trainer.train_batch_size, "
      "or trainer.per_device_parallelism to accumulate gradients over smaller microbatches), turn on "
      "model.gradient_checkpointing, or use mixed precision (trainer.mp); trainer.check_memory: false starts anyway");
}

}  // namespace levanter::trainer
