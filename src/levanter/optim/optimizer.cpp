#include "levanter/optim/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

#include "haliax/random.h"
#include "levanter/optim/kernels.h"
#include "levanter/runtime/thread_pool.h"

namespace levanter::optim {

namespace {

// A piece of one tensor: the unit of work and, for norms, of summation (kernels::kNormBlock elements).
struct Chunk {
  size_t tensor;
  int64_t begin, end;
};

std::vector<Chunk> make_chunks(const std::vector<int64_t>& sizes) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t b = 0; b < sizes[t]; b += kernels::kNormBlock) {
      chunks.push_back({t, b, std::min(sizes[t], b + kernels::kNormBlock)});
    }
  }
  return chunks;
}

// Runs fn(i) for every i in [0, n) on the compute pool's persistent threads, at most at::get_num_threads()
// of them (the caller included), which claim indices one at a time (so a thread that the OS preempts does
// not hold up the others). Each index's work must be independent of which thread runs it. at::parallel_for
// would be the natural choice, but with an OpenMP build of ATen it is a header template whose
// `#pragma omp parallel` needs -fopenmp in *this* translation unit; without it, it runs on one thread.
template <typename F>
void parallel_each(int64_t n, const F& fn) {
  runtime::ThreadPool::ForOptions options;
  options.max_participants = static_cast<size_t>(std::max(1, at::get_num_threads()));
  const size_t count = static_cast<size_t>(std::max<int64_t>(0, n));
  runtime::compute_pool().parallel_for(count, options, [&](size_t begin, size_t end, int) {
    for (size_t i = begin; i < end; ++i) fn(static_cast<int64_t>(i));
  });
}

std::string shape_str(at::IntArrayRef s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

bool is_fused_dtype(const at::Tensor& g) { return g.scalar_type() == at::kFloat || g.scalar_type() == at::kBFloat16; }

// A gradient the kernels can read directly: contiguous CPU float32 or bfloat16 (others are converted).
at::Tensor kernel_ready(const at::Tensor& g) {
  if (g.device().is_cpu() && g.is_contiguous() && is_fused_dtype(g)) return g;
  at::Tensor c = g.to(at::kCPU);
  if (!is_fused_dtype(c)) c = c.to(at::kFloat);
  return c.contiguous();
}

// Per-tensor sums of squares (double, fixed blocks), for kernel-ready tensors; undefined entries give 0.
std::vector<double> tensor_sums_of_squares(const std::vector<at::Tensor>& ready) {
  std::vector<int64_t> sizes;
  for (const auto& t : ready) sizes.push_back(t.defined() ? t.numel() : 0);
  const std::vector<Chunk> chunks = make_chunks(sizes);
  std::vector<double> block(chunks.size(), 0.0);
  parallel_each(static_cast<int64_t>(chunks.size()), [&](int64_t c) {
    const Chunk& ch = chunks[c];
    const at::Tensor& t = ready[ch.tensor];
    if (t.scalar_type() == at::kFloat) {
      block[c] = kernels::sum_squares(t.data_ptr<float>() + ch.begin, ch.end - ch.begin);
    } else {
      block[c] = kernels::sum_squares(reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>()) + ch.begin,
                                      ch.end - ch.begin);
    }
  });
  std::vector<double> sums(ready.size(), 0.0);
  for (size_t c = 0; c < chunks.size(); ++c) sums[chunks[c].tensor] += block[c];  // in block order
  return sums;
}

double norm_from_sums(const std::vector<double>& sums) {
  double total = 0;
  for (double s : sums) total += s;  // in parameter order
  return std::sqrt(total);
}

// optax.clip_by_global_norm: unchanged below max_norm, else scaled to it.
double clip_scale_for(double norm, const std::optional<double>& max_norm) {
  if (!max_norm || *max_norm <= 0) return 1.0;  // Levanter: `if self.max_grad_norm:`
  if (norm < *max_norm) return 1.0;
  return *max_norm / norm;
}

}  // namespace

// --- construction -------------------------------------------------------------------------------------------

Optimizer::Optimizer(const OptimizerConfig& config, std::vector<Param> params, Kernel kernel)
    : config_(config), lion_(config.type.name == "lion"), sophia_(config.is_sophia()), params_(std::move(params)) {
  config_.validate();
  std::set<std::string> seen;
  std::vector<haliax::nn::ParamInfo> infos;
  for (const auto& [info, p] : params_) {
    if (!seen.insert(info.path).second)
      throw std::invalid_argument("optimizer: parameter path '" + info.path + "' appears twice");
    if (!p.defined()) throw std::invalid_argument("optimizer: parameter '" + info.path + "' is undefined");
    if (p.scalar_type() != at::kFloat) {
      throw std::invalid_argument("optimizer: parameter '" + info.path + "' is " +
                                  std::string(c10::toString(p.scalar_type())) +
                                  "; the optimizer updates float32 master weights (keep bf16 copies for compute)");
    }
    infos.push_back(info);
    m_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    if (!lion_ && !sophia_) v_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    if (sophia_) h_.push_back(at::zeros_like(p, at::MemoryFormat::Contiguous));
    fused_.push_back(kernel == Kernel::kFused && p.device().is_cpu() && p.is_contiguous());
  }
  decay_ = weight_decay_mask(config_, infos);
}

Optimizer::Optimizer(const OptimizerConfig& config,
                     const std::vector<std::pair<haliax::nn::ParamInfo, haliax::NamedArray>>& params, Kernel kernel)
    : Optimizer(
          config,
          [&] {
            std::vector<Param> out;
            for (const auto& [info, p] : params) out.emplace_back(info, p.array());
            return out;
          }(),
          kernel) {}

std::vector<std::string> Optimizer::decayed_paths() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (decay_[i]) out.push_back(params_[i].first.path);
  }
  return out;
}

// --- the update ---------------------------------------------------------------------------------------------

bool Optimizer::needs_hessian() const { return sophia_ && (count_ + 1) % config_.update_interval == 0; }

haliax::random::Key Optimizer::hessian_key() const {
  // Levanter splits a key seeded with rng_seed at each estimate; here estimate k uses fold_in(key, k): a function of
  // (rng_seed, k), so a resumed run draws the same randomness.
  return haliax::random::Key(static_cast<uint64_t>(config_.rng_seed)).fold_in(static_cast<uint64_t>(hessian_count_));
}

std::vector<at::Tensor> Optimizer::hessian_probes() const {
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& [info, p] : params_) shapes.push_back(p.sizes().vec());
  return hessian_probes(shapes);
}

std::vector<at::Tensor> Optimizer::hessian_probes(const std::vector<std::vector<int64_t>>& shapes) const {
  if (shapes.size() != params_.size()) {
    throw std::invalid_argument("Optimizer::hessian_probes: got " + std::to_string(shapes.size()) + " shapes for " +
                                std::to_string(params_.size()) + " parameters");
  }
  std::vector<at::Tensor> out;
  out.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) out.push_back(hessian_probe(i, shapes[i]));
  return out;
}

at::Tensor Optimizer::hessian_probe(size_t i, const std::vector<int64_t>& shape) const {
  if (i >= params_.size()) throw std::out_of_range("Optimizer::hessian_probe: no parameter " + std::to_string(i));
  // Parameter i's probe: fold_in(hessian_key(), i).
  std::vector<haliax::Axis> axes;
  for (size_t d = 0; d < shape.size(); ++d) axes.emplace_back("d" + std::to_string(d), shape[d]);
  at::Tensor z = haliax::random::normal(hessian_key().fold_in(static_cast<uint64_t>(i)), axes, at::kFloat).array();
  return z.reshape(shape).to(params_[i].second.device());
}

void Optimizer::set_bf16_copies(std::vector<at::Tensor> copies) {
  if (!copies.empty() && copies.size() != params_.size()) {
    throw std::invalid_argument("Optimizer::set_bf16_copies: got " + std::to_string(copies.size()) + " copies for " +
                                std::to_string(params_.size()) + " parameters");
  }
  for (size_t i = 0; i < copies.size(); ++i) {
    const at::Tensor& c = copies[i];
    if (!c.defined()) continue;
    const at::Tensor& p = params_[i].second;
    if (c.scalar_type() != at::kBFloat16 || !c.is_contiguous() || !c.sizes().equals(p.sizes()) ||
        c.device() != p.device()) {
      throw std::invalid_argument("Optimizer::set_bf16_copies: the copy of '" + params_[i].first.path +
                                  "' must be a contiguous bfloat16 tensor of shape " + shape_str(p.sizes()) +
                                  " on the parameter's device");
    }
  }
  all_copies_ = !copies.empty();
  for (const at::Tensor& c : copies) all_copies_ = all_copies_ && c.defined();
  copies_ = std::move(copies);
}

StepStats Optimizer::step(const std::vector<at::Tensor>& grads, double learning_rate,
                          const std::vector<at::Tensor>* hessian_estimate) {
  if (needs_hessian()) {
    if (!hessian_estimate) {
      throw std::invalid_argument("Optimizer::step: " + config_.type.name +
                                  " refreshes its Hessian estimate at update " + std::to_string(count_ + 1) +
                                  " (every " + std::to_string(config_.update_interval) +
                                  "): pass one (hessian_probes() times the Hessian-vector product)");
    }
    if (hessian_estimate->size() != params_.size()) {
      throw std::invalid_argument("Optimizer::step: got " + std::to_string(hessian_estimate->size()) +
                                  " Hessian estimates for " + std::to_string(params_.size()) + " parameters");
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      const at::Tensor& e = (*hessian_estimate)[i];
      if (e.defined() && !e.sizes().equals(params_[i].second.sizes())) {
        throw std::invalid_argument("Optimizer::step: Hessian estimate of '" + params_[i].first.path + "' has shape " +
                                    shape_str(e.sizes()) + ", the parameter " + shape_str(params_[i].second.sizes()));
      }
    }
  }
  if (grads.size() != params_.size()) {
    throw std::invalid_argument("Optimizer::step: got " + std::to_string(grads.size()) + " gradients for " +
                                std::to_string(params_.size()) + " parameters");
  }
  std::vector<at::Tensor> ready(grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& p = params_[i].second;
    if (!grads[i].defined()) continue;
    if (!grads[i].sizes().equals(p.sizes())) {
      throw std::invalid_argument("Optimizer::step: gradient of '" + params_[i].first.path + "' has shape " +
                                  shape_str(grads[i].sizes()) + ", the parameter " + shape_str(p.sizes()));
    }
    ready[i] = fused_[i] ? kernel_ready(grads[i]) : grads[i];
  }

  StepStats stats;
  stats.learning_rate = learning_rate;
  {
    // Norm: fused parameters' gradients through the deterministic kernel; the others (non-CPU) through ATen.
    std::vector<at::Tensor> cpu(ready.size());
    std::vector<double> sums(ready.size(), 0.0);
    for (size_t i = 0; i < ready.size(); ++i) {
      if (ready[i].defined() && fused_[i]) cpu[i] = ready[i];
    }
    std::vector<double> fused_sums = tensor_sums_of_squares(cpu);
    for (size_t i = 0; i < ready.size(); ++i) {
      if (!ready[i].defined()) continue;
      sums[i] = fused_[i] ? fused_sums[i] : ready[i].to(at::kDouble).pow(2).sum().item<double>();
    }
    stats.grad_norm = total_ ? std::sqrt(total_(sums)) : norm_from_sums(sums);
  }
  stats.clip_scale = clip_scale_for(stats.grad_norm, config_.max_grad_norm);

  const int64_t t = count_ + 1;
  const double b1 = config_.beta1, b2 = config_.beta2;
  double wd = config_.weight_decay;
  if (config_.adamc_weight_decay) wd = wd * (learning_rate / config_.learning_rate);
  kernels::AdamScalars base{};
  base.b1 = static_cast<float>(b1);
  base.one_minus_b1 = static_cast<float>(1.0 - b1);
  base.b2 = static_cast<float>(b2);
  base.one_minus_b2 = static_cast<float>(1.0 - b2);
  // Bias corrections in double, their reciprocals rounded to float32 once (so the loop multiplies, not divides).
  base.inv_bc1 = static_cast<float>(1.0 / (1.0 - std::pow(b1, static_cast<double>(t))));
  base.inv_bc1_next = static_cast<float>(1.0 / (1.0 - std::pow(b1, static_cast<double>(t + 1))));
  base.inv_bc2 = static_cast<float>(1.0 / (1.0 - std::pow(b2, static_cast<double>(t))));
  base.eps = static_cast<float>(config_.epsilon);
  base.lr = static_cast<float>(learning_rate);
  base.grad_scale = static_cast<float>(stats.clip_scale);
  base.nesterov = config_.nesterov;
  const float wd_f = static_cast<float>(wd);

  // Undefined gradients are zeros (a parameter the loss does not touch still decays, as in optax).
  for (size_t i = 0; i < ready.size(); ++i) {
    if (!ready[i].defined()) ready[i] = at::zeros_like(m_[i]);
  }

  // Fused parameters: one pass over fixed-size chunks of all tensors, spread over the threads.
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < params_.size(); ++i) sizes.push_back(fused_[i] ? params_[i].second.numel() : 0);
  const std::vector<Chunk> chunks = make_chunks(sizes);
  kernels::LionScalars lion_base{base.b1, base.one_minus_b1, base.b2, base.one_minus_b2, base.lr,
                                 0.0f,    base.grad_scale};
  kernels::SophiaScalars sophia_base{
      base.b1,
      base.one_minus_b1,
      base.inv_bc1,
      static_cast<float>(config_.sophia_gamma()),
      base.eps,
      config_.clip_threshold ? static_cast<float>(*config_.clip_threshold) : std::numeric_limits<float>::infinity(),
      base.lr,
      0.0f,
      base.grad_scale};
  // The bf16 copy of a chunk, written right after its update.
  auto write_copy = [&](size_t i, const Chunk& ch) {
    if (copies_.empty() || !copies_[i].defined()) return;
    kernels::round_to_bf16(params_[i].second.data_ptr<float>() + ch.begin,
                           reinterpret_cast<uint16_t*>(copies_[i].data_ptr<at::BFloat16>()) + ch.begin,
                           ch.end - ch.begin);
  };
  parallel_each(static_cast<int64_t>(chunks.size()), [&](int64_t c) {
    const Chunk& ch = chunks[c];
    const size_t i = ch.tensor;
    if (sophia_) {
      kernels::SophiaScalars s = sophia_base;
      s.wd = decay_[i] && wd > 0 ? wd_f : 0.0f;
      float* p = params_[i].second.data_ptr<float>() + ch.begin;
      float* m = m_[i].data_ptr<float>() + ch.begin;
      const float* h = h_[i].data_ptr<float>() + ch.begin;
      const int64_t n = ch.end - ch.begin;
      if (ready[i].scalar_type() == at::kFloat) {
        kernels::sophia_update(p, m, h, ready[i].data_ptr<float>() + ch.begin, n, s);
      } else {
        kernels::sophia_update(p, m, h, reinterpret_cast<const uint16_t*>(ready[i].data_ptr<at::BFloat16>()) + ch.begin,
                               n, s);
      }
      write_copy(i, ch);
      return;
    }
    if (lion_) {
      kernels::LionScalars s = lion_base;
      s.wd = decay_[i] && wd > 0 ? wd_f : 0.0f;
      float* p = params_[i].second.data_ptr<float>() + ch.begin;
      float* m = m_[i].data_ptr<float>() + ch.begin;
      const int64_t n = ch.end - ch.begin;
      if (ready[i].scalar_type() == at::kFloat) {
        kernels::lion_update(p, m, ready[i].data_ptr<float>() + ch.begin, n, s);
      } else {
        kernels::lion_update(p, m, reinterpret_cast<const uint16_t*>(ready[i].data_ptr<at::BFloat16>()) + ch.begin, n,
                             s);
      }
      write_copy(i, ch);
      return;
    }
    kernels::AdamScalars s = base;
    s.wd = decay_[i] && wd > 0 ? wd_f : 0.0f;
    float* p = params_[i].second.data_ptr<float>() + ch.begin;
    float* m = m_[i].data_ptr<float>() + ch.begin;
    float* v = v_[i].data_ptr<float>() + ch.begin;
    const int64_t n = ch.end - ch.begin;
    if (ready[i].scalar_type() == at::kFloat) {
      kernels::adamw_update(p, m, v, ready[i].data_ptr<float>() + ch.begin, n, s);
    } else {
      kernels::adamw_update(p, m, v, reinterpret_cast<const uint16_t*>(ready[i].data_ptr<at::BFloat16>()) + ch.begin, n,
                            s);
    }
    write_copy(i, ch);
  });
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!fused_[i]) continue;
    params_[i].second.unsafeGetTensorImpl()->bump_version();  // written through raw pointers
    if (!copies_.empty() && copies_[i].defined()) copies_[i].unsafeGetTensorImpl()->bump_version();
  }

  // Other parameters: the same math with ATen ops (different rounding).
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (fused_[i]) continue;
    at::Tensor& p = params_[i].second;
    at::Tensor g = ready[i].to(p.options());
    if (base.grad_scale != 1.0f) g = g * static_cast<double>(base.grad_scale);
    at::Tensor& m = m_[i];
    if (sophia_) {
      m.mul_(b1).add_(g, 1.0 - b1);
      at::Tensor d = (h_[i] * static_cast<double>(sophia_base.gamma)).clamp_min_(static_cast<double>(base.eps));
      at::Tensor u = (m * static_cast<double>(base.inv_bc1)).div_(d);
      if (config_.clip_threshold) u.clamp_(-*config_.clip_threshold, *config_.clip_threshold);
      if (decay_[i] && wd > 0) u.add_(p, static_cast<double>(wd_f));
      p.sub_(u, static_cast<double>(base.lr));
      continue;
    }
    if (lion_) {
      at::Tensor u = (g * static_cast<double>(base.one_minus_b1)).add_(m * static_cast<double>(base.b1)).sign_();
      m.mul_(b2).add_(g, 1.0 - b2);
      if (decay_[i] && wd > 0) u.add_(p, static_cast<double>(wd_f));
      p.sub_(u, static_cast<double>(base.lr));
      continue;
    }
    at::Tensor& v = v_[i];
    m.mul_(b1).add_(g, 1.0 - b1);
    v.mul_(b2).addcmul_(g, g, 1.0 - b2);
    at::Tensor m_hat = config_.nesterov ? (m * static_cast<double>(base.inv_bc1_next))
                                              .mul_(b1)
                                              .add_(g * static_cast<double>(base.inv_bc1), 1.0 - b1)
                                        : m * static_cast<double>(base.inv_bc1);
    at::Tensor u = m_hat.div_((v * static_cast<double>(base.inv_bc2)).sqrt_().add_(config_.epsilon));
    if (decay_[i] && wd > 0) u.add_(p, static_cast<double>(wd_f));
    p.sub_(u, static_cast<double>(base.lr));
  }
  // The copies of the parameters updated with ATen ops above.
  for (size_t i = 0; i < params_.size() && !copies_.empty(); ++i) {
    if (!fused_[i] && copies_[i].defined()) copies_[i].copy_(params_[i].second);
  }
  ++count_;
  // Sophia-H: the new estimate enters the EMA after this update (Levanter's update_hessian runs after the update is
  // computed), so it shapes the next updates.
  if (sophia_ && count_ % config_.update_interval == 0) {
    const float b2f = static_cast<float>(b2), omb2 = static_cast<float>(1.0 - b2);
    for (size_t i = 0; i < params_.size(); ++i) {
      at::Tensor e = (*hessian_estimate)[i];
      if (!e.defined()) e = at::zeros_like(h_[i]);
      e = e.to(at::kCPU, at::kFloat).contiguous();
      if (h_[i].device().is_cpu()) {
        kernels::hessian_ema(h_[i].data_ptr<float>(), e.data_ptr<float>(), h_[i].numel(), b2f, omb2);
      } else {
        h_[i].mul_(b2).add_(e.to(h_[i].device()), 1.0 - b2);
      }
    }
    ++hessian_count_;
  }
  return stats;
}

// --- state --------------------------------------------------------------------------------------------------

haliax::nn::StateDict Optimizer::state_dict() const {
  haliax::nn::StateDict out;
  out.emplace_back("opt.step", at::scalar_tensor(count_, at::TensorOptions().dtype(at::kLong)));
  for (size_t i = 0; i < params_.size(); ++i) out.emplace_back("opt.m." + params_[i].first.path, m_[i]);
  for (size_t i = 0; i < v_.size(); ++i) out.emplace_back("opt.v." + params_[i].first.path, v_[i]);
  if (sophia_) {
    out.emplace_back("opt.hessian_step", at::scalar_tensor(hessian_count_, at::TensorOptions().dtype(at::kLong)));
    for (size_t i = 0; i < h_.size(); ++i) out.emplace_back("opt.h." + params_[i].first.path, h_[i]);
  }
  return out;
}

void Optimizer::load_state_dict(const haliax::nn::StateDict& dict) {
  std::map<std::string, at::Tensor> by_key;
  for (const auto& [key, t] : dict) {
    if (key.rfind("opt.", 0) != 0) continue;
    if (!by_key.emplace(key, t).second)
      throw std::invalid_argument("Optimizer::load_state_dict: duplicate entry '" + key + "'");
  }
  // A state written by another optimizer type: say so rather than name a missing tensor. Adam keeps m and v,
  // Lion m, Sophia-H m and h.
  if (!params_.empty() && by_key.count("opt.m." + params_.front().first.path) > 0) {
    const std::string& first = params_.front().first.path;
    const std::string written = by_key.count("opt.v." + first)   ? "adam"
                                : by_key.count("opt.h." + first) ? "sophia"
                                                                 : "lion";
    const std::string family = config_.is_sophia() ? "sophia" : config_.type.name;
    if (written != family) {
      throw std::invalid_argument("Optimizer::load_state_dict: the optimizer state was written by " + written +
                                  " but optimizer.type is " + config_.type.name +
                                  ": resume with the optimizer the run was trained with");
    }
  }
  auto take = [&](const std::string& key) {
    auto it = by_key.find(key);
    if (it == by_key.end()) throw std::invalid_argument("Optimizer::load_state_dict: missing entry '" + key + "'");
    at::Tensor t = it->second;
    by_key.erase(it);
    return t;
  };
  auto take_count = [&](const std::string& key) {
    at::Tensor t = take(key);
    if (t.numel() != 1 || at::isFloatingType(t.scalar_type())) {
      throw std::invalid_argument("Optimizer::load_state_dict: '" + key + "' must be one integer");
    }
    return t.item<int64_t>();
  };
  // Check everything before changing anything.
  const int64_t step = take_count("opt.step");
  const int64_t hessian_step = sophia_ ? take_count("opt.hessian_step") : 0;
  std::map<char, std::vector<at::Tensor>> moments;
  std::vector<char> names = {'m'};
  if (!v_.empty()) names.push_back('v');
  if (!h_.empty()) names.push_back('h');
  for (char which : names) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string key = std::string("opt.") + which + "." + params_[i].first.path;
      at::Tensor t = take(key);
      const at::Tensor& p = params_[i].second;
      if (!t.sizes().equals(p.sizes())) {
        throw std::invalid_argument("Optimizer::load_state_dict: '" + key + "' has shape " + shape_str(t.sizes()) +
                                    ", the parameter " + shape_str(p.sizes()));
      }
      if (t.scalar_type() != at::kFloat) {
        throw std::invalid_argument("Optimizer::load_state_dict: '" + key + "' is " +
                                    std::string(c10::toString(t.scalar_type())) + ", expected Float (float32)");
      }
      moments[which].push_back(t);
    }
  }
  if (!by_key.empty()) {
    std::string keys;
    for (const auto& kv : by_key) keys += (keys.empty() ? "" : ", ") + kv.first;
    throw std::invalid_argument("Optimizer::load_state_dict: unexpected entries (no such parameter): " + keys);
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    m_[i].copy_(moments['m'][i]);
    if (!v_.empty()) v_[i].copy_(moments['v'][i]);
    if (!h_.empty()) h_[i].copy_(moments['h'][i]);
  }
  count_ = step;
  hessian_count_ = hessian_step;
}

namespace {
constexpr const char* kMomentPrefixes[] = {"opt.m.", "opt.v.", "opt.h."};
}  // namespace

std::vector<std::string> Optimizer::state_keys_of(const std::string& path) {
  std::vector<std::string> out;
  for (const char* prefix : kMomentPrefixes) out.push_back(prefix + path);
  return out;
}

std::optional<std::string> Optimizer::parameter_of_state_key(const std::string& key) {
  for (const char* prefix : kMomentPrefixes) {
    const std::string p(prefix);
    if (key.rfind(p, 0) == 0) return key.substr(p.size());
  }
  return std::nullopt;
}

// --- free functions -----------------------------------------------------------------------------------------

double global_norm(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> ready(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].defined()) ready[i] = kernel_ready(tensors[i]);
  }
  return norm_from_sums(tensor_sums_of_squares(ready));
}

double clip_by_global_norm_(std::vector<at::Tensor>& grads, double max_norm) {
  const double norm = global_norm(grads);
  const double scale = clip_scale_for(norm, max_norm);
  if (scale != 1.0) {
    at::NoGradGuard no_grad;
    for (auto& g : grads) {
      if (g.defined()) g.mul_(scale);
    }
  }
  return norm;
}

}  // namespace levanter::optim
