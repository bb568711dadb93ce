#include "levanter/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace levanter::optim {

using config::ConfigError;
using Piece = LrSchedule::Piece;

namespace {

Piece linear(double from, double to, int64_t steps) {
  Piece p{Piece::Kind::kLinear};
  p.from = from;
  p.to = to;
  p.steps = steps;
  return p;
}

Piece constant(double value) {
  Piece p{Piece::Kind::kConstant};
  p.from = value;
  return p;
}

// Cycle end points, as Levanter's _get_cycle_minima: 0, the interior minima, total.
std::vector<int64_t> cycle_points(const OptimizerConfig& c, int64_t total) {
  std::vector<int64_t> points;
  if (!c.cycle_length.is_none()) {
    if (c.cycle_length.number) {
      int64_t len = fraction_or_steps(*c.cycle_length.number, total, "cycle_length");
      if (len <= 0)
        throw ConfigError("optimizer.cycle_length: resolves to 0 steps for " + std::to_string(total) + " steps");
      for (int64_t i = 1; i < total / len; ++i) points.push_back(i * len);
    } else {
      int64_t sum = 0;
      for (int64_t len : *c.cycle_length.list) points.push_back(sum += len);
      if (!points.empty() && points.back() > total) {
        throw ConfigError("optimizer.cycle_length: cycle lengths exceed total number of steps: " +
                          std::to_string(points.back()) + " > " + std::to_string(total));
      }
    }
  } else if (c.haps.list) {
    points = *c.haps.list;
  } else if (c.cycles.number) {
    int64_t n = static_cast<int64_t>(*c.cycles.number);
    for (int64_t i = 0; i < n - 1; ++i) {
      points.push_back(static_cast<int64_t>(static_cast<double>(total) / static_cast<double>(n) * double(i + 1)));
    }
  } else if (c.cycles.list) {
    points = *c.cycles.list;
  }
  points.insert(points.begin(), 0);
  if (points.back() != total) points.push_back(total);
  return points;
}

}  // namespace

double Piece::at(int64_t count) const {
  const double t = static_cast<double>(count);
  switch (kind) {
    case Kind::kConstant:
      return from;
    case Kind::kLinear: {
      // optax.linear_schedule; a transition of <= 0 steps is the constant init value.
      if (steps <= 0) return from;
      double c = std::clamp(t, 0.0, static_cast<double>(steps));
      double frac = 1.0 - c / static_cast<double>(steps);
      return (from - to) * frac + to;
    }
    case Kind::kCosine: {
      // optax.cosine_decay_schedule(from, steps, alpha, exponent)
      double c = std::min(t, static_cast<double>(steps));
      double cosine = 0.5 * (1.0 + std::cos(M_PI * c / static_cast<double>(steps)));
      double decayed = (1.0 - alpha) * std::pow(cosine, exponent) + alpha;
      return from * decayed;
    }
    case Kind::kInvSqrt: {
      // Levanter's _inv_sqrt_decay_schedule(lr, min_lr, warmup_steps, timescale)
      double decay = std::min(1.0, 1.0 / std::sqrt(std::max(t + static_cast<double>(steps), 1.0) / timescale));
      return std::max(from * decay, to);
    }
    case Kind::kInv: {
      // Levanter's _inv_decay_schedule(lr, min_lr, decay_steps)
      double decay = std::min(1.0, 1.0 / ((from / to - 1.0) * std::max(t, 1.0) / static_cast<double>(steps) + 1.0));
      return std::max(from * decay, to);
    }
  }
  return from;
}

LrSchedule LrSchedule::build(const OptimizerConfig& c, int64_t num_train_steps) {
  c.validate();
  if (num_train_steps < 0) throw ConfigError("learning-rate schedule: num_train_steps must be >= 0");
  const int64_t cooldown_steps = c.cooldown ? fraction_or_steps(*c.cooldown, num_train_steps, "cooldown") : 0;
  const int64_t total_main = num_train_steps - cooldown_steps;
  const std::vector<int64_t> points = cycle_points(c, total_main);
  const double lr = c.learning_rate;
  const double min_lr = lr * c.min_lr_ratio;

  LrSchedule s;
  double previous_end = 0.0;
  Piece decay_piece = constant(lr);
  int64_t decay_steps = 0;
  for (size_t cycle = 0; cycle + 1 < points.size(); ++cycle) {
    const int64_t start = points[cycle], end = points[cycle + 1];
    const int64_t cycle_steps = end - start;
    const int64_t warmup_steps = cycle == 0 ? fraction_or_steps(c.warmup, cycle_steps, "warmup")
                                            : fraction_or_steps(c.rewarmup, cycle_steps, "rewarmup");
    if (warmup_steps != 0) {
      s.pieces.push_back(linear(previous_end, lr, warmup_steps));
      s.boundaries.push_back(start + warmup_steps);
    }
    decay_steps = c.decay ? fraction_or_steps(*c.decay, cycle_steps, "decay") : cycle_steps - warmup_steps;
    const int64_t stable_steps = cycle_steps - warmup_steps - decay_steps;
    if (stable_steps != 0) {
      s.pieces.push_back(constant(lr));
      s.boundaries.push_back(start + warmup_steps + stable_steps);
    }
    const std::string& name = c.lr_schedule.name;
    if (name == "constant") {
      decay_piece = constant(lr);
    } else if (name == "cosine") {
      if (decay_steps <= 0) {
        throw ConfigError("optimizer.lr_schedule: cosine needs a decay phase of at least one step, but cycle " +
                          std::to_string(cycle) + " (" + std::to_string(cycle_steps) + " steps) has " +
                          std::to_string(warmup_steps) + " warmup steps and " + std::to_string(decay_steps) +
                          " decay steps (optax.cosine_decay_schedule refuses decay_steps <= 0)");
      }
      decay_piece = Piece{Piece::Kind::kCosine};
      decay_piece.from = lr;
      decay_piece.to = min_lr;
      decay_piece.steps = decay_steps;
      decay_piece.alpha = c.min_lr_ratio;
      decay_piece.exponent = c.lr_schedule.exponent;
    } else if (name == "linear") {
      decay_piece = linear(lr, min_lr, decay_steps);
    } else if (name == "inv_sqrt") {
      decay_piece = Piece{Piece::Kind::kInvSqrt};
      decay_piece.from = lr;
      decay_piece.to = min_lr;
      decay_piece.steps = warmup_steps;
      decay_piece.timescale = c.lr_schedule.timescale;
    } else if (name == "inv") {
      decay_piece = Piece{Piece::Kind::kInv};
      decay_piece.from = lr;
      decay_piece.to = min_lr;
      decay_piece.steps = decay_steps;
    } else {
      throw ConfigError("optimizer.lr_schedule: unknown schedule '" + name + "'");
    }
    previous_end = decay_piece.at(decay_steps);
    s.pieces.push_back(decay_piece);
    s.boundaries.push_back(end);
  }
  if (s.pieces.empty()) {
    throw ConfigError("learning-rate schedule: no steps to schedule (num_train_steps " +
                      std::to_string(num_train_steps) + ", cooldown " + std::to_string(cooldown_steps) + ")");
  }
  if (cooldown_steps != 0) s.pieces.push_back(linear(decay_piece.at(decay_steps), min_lr, cooldown_steps));
  // optax.join_schedules pairs boundaries[k] with pieces[k + 1]; a trailing boundary has no piece after it.
  if (s.boundaries.size() >= s.pieces.size()) s.boundaries.resize(s.pieces.size() - 1);
  return s;
}

double LrSchedule::at(int64_t step) const {
  // optax.join_schedules: start with the first piece, switch to piece k + 1 once step >= boundaries[k].
  double out = pieces[0].at(step);
  for (size_t k = 0; k < boundaries.size(); ++k) {
    if (!(step < boundaries[k])) out = pieces[k + 1].at(step - boundaries[k]);
  }
  return out;
}

std::string LrSchedule::describe() const {
  std::ostringstream o;
  o.precision(6);
  for (size_t k = 0; k < pieces.size(); ++k) {
    const Piece& p = pieces[k];
    if (k) o << ", ";
    o << "[" << (k == 0 ? 0 : boundaries[k - 1]) << "] ";
    switch (p.kind) {
      case Piece::Kind::kConstant:
        o << "constant " << p.from;
        break;
      case Piece::Kind::kLinear:
        o << "linear " << p.from << "->" << p.to << " over " << p.steps;
        break;
      case Piece::Kind::kCosine:
        o << "cosine " << p.from << "->" << p.to << " over " << p.steps;
        break;
      case Piece::Kind::kInvSqrt:
        o << "inv_sqrt " << p.from << " (min " << p.to << ")";
        break;
      case Piece::Kind::kInv:
        o << "inv " << p.from << "->" << p.to << " over " << p.steps;
        break;
    }
  }
  return o.str();
}

double learning_rate_at(const OptimizerConfig& config, int64_t step, int64_t num_train_steps) {
  return LrSchedule::build(config, num_train_steps).at(step);
}

}  // namespace levanter::optim
