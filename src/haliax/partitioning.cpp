#include "haliax/partitioning.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <set>

#include "haliax/error.h"

namespace haliax {

namespace {

std::string prefix(const std::string& what) { return what.empty() ? "" : what + ": "; }

std::string mesh_str(const std::vector<std::pair<std::string, int64_t>>& axes) {
  std::string s = "{";
  for (size_t i = 0; i < axes.size(); ++i) {
    s += (i ? ", " : "") + axes[i].first + ": " + std::to_string(axes[i].second);
  }
  return s + "}";
}

}  // namespace

Mesh::Mesh(std::vector<std::pair<std::string, int64_t>> axes) : axes_(std::move(axes)) {
  std::set<std::string> seen;
  for (const auto& [name, size] : axes_) {
    if (!seen.insert(name).second) value_error("mesh axis '" + name + "' appears twice in " + mesh_str(axes_));
    if (size <= 0) value_error("mesh axis '" + name + "' has size " + std::to_string(size) + "; sizes are positive");
  }
}

int64_t Mesh::size() const {
  int64_t n = 1;
  for (const auto& a : axes_) n *= a.second;
  return n;
}

bool Mesh::has_axis(const std::string& name) const {
  for (const auto& a : axes_)
    if (a.first == name) return true;
  return false;
}

int64_t Mesh::axis_size(const std::string& name) const {
  for (const auto& a : axes_)
    if (a.first == name) return a.second;
  value_error("no mesh axis '" + name + "' in the mesh " + mesh_str(axes_));
}

int64_t Mesh::coordinate(int64_t rank, const std::string& name) const {
  if (rank < 0 || rank >= size()) {
    value_error("rank " + std::to_string(rank) + " is outside the mesh " + mesh_str(axes_) + " of " +
                std::to_string(size()) + " processes");
  }
  // Row-major: the last axis varies fastest.
  int64_t stride = 1;
  for (size_t i = axes_.size(); i-- > 0;) {
    if (axes_[i].first == name) return (rank / stride) % axes_[i].second;
    stride *= axes_[i].second;
  }
  value_error("no mesh axis '" + name + "' in the mesh " + mesh_str(axes_));
}

std::optional<std::string> physical_axis_name(const std::string& axis, const AxisMapping& mapping) {
  auto it = mapping.find(axis);
  if (it == mapping.end()) return std::nullopt;
  return it->second;
}

int64_t physical_axis_size(const std::string& axis, const AxisMapping& mapping, const Mesh& mesh) {
  auto name = physical_axis_name(axis, mapping);
  return name ? mesh.axis_size(*name) : 1;
}

std::vector<std::optional<std::string>> pspec_for(const std::vector<Axis>& axes, const AxisMapping& mapping,
                                                  const Mesh& mesh, const std::string& what) {
  std::vector<std::optional<std::string>> spec(axes.size());
  std::map<std::string, std::string> used;  // mesh axis -> the array axis split over it
  for (size_t i = 0; i < axes.size(); ++i) {
    auto physical = physical_axis_name(axes[i].name, mapping);
    if (!physical) continue;
    const int64_t pieces = mesh.axis_size(*physical);
    auto [it, fresh] = used.emplace(*physical, axes[i].name);
    if (!fresh) {
      value_error(prefix(what) + "axes '" + it->second + "' and '" + axes[i].name + "' are both mapped to mesh axis '" +
                  *physical + "'; one array can be split over a mesh axis only once");
    }
    if (axes[i].size % pieces != 0) {
      value_error(prefix(what) + "axis '" + axes[i].name + "' of size " + std::to_string(axes[i].size) +
                  " does not divide evenly over mesh axis '" + *physical + "' of size " + std::to_string(pieces));
    }
    spec[i] = *physical;
  }
  return spec;
}

std::vector<Axis> local_axes(const std::vector<Axis>& axes, const AxisMapping& mapping, const Mesh& mesh,
                             const std::string& what) {
  const auto spec = pspec_for(axes, mapping, mesh, what);
  std::vector<Axis> out = axes;
  for (size_t i = 0; i < axes.size(); ++i) {
    if (spec[i]) out[i].size = axes[i].size / mesh.axis_size(*spec[i]);
  }
  return out;
}

NamedArray shard(const NamedArray& x, const AxisMapping& mapping, const Mesh& mesh, int64_t rank,
                 const std::string& what) {
  const auto spec = pspec_for(x.axes(), mapping, mesh, what);
  at::Tensor t = x.array();
  std::vector<Axis> axes = x.axes();
  bool split = false;
  for (size_t i = 0; i < axes.size(); ++i) {
    if (!spec[i]) continue;
    const int64_t pieces = mesh.axis_size(*spec[i]);
    const int64_t local = axes[i].size / pieces;
    t = t.narrow(static_cast<int64_t>(i), mesh.coordinate(rank, *spec[i]) * local, local);
    axes[i].size = local;
    split = split || pieces > 1;
  }
  // A copy of its own when split, so that the whole array can be freed.
  return NamedArray(split ? t.clone(at::MemoryFormat::Contiguous) : t, axes);
}

}  // namespace haliax

// --- Creating in pieces, or only the shapes ---------------------------------------------------------------------

namespace haliax {

namespace {
thread_local std::shared_ptr<const CreatePieces> current_pieces;
thread_local bool eval_shape = false;
}  // namespace

namespace {
CreatePieces checked(CreatePieces pieces) {
  for (const auto& [axis, block] : pieces.split) {
    if (block.first < 1 || block.second < 0 || block.second >= block.first) {
      value_error("creating in pieces: axis '" + axis + "': block " + std::to_string(block.second) + " of " +
                  std::to_string(block.first));
    }
  }
  return pieces;
}
}  // namespace

// Checked before the enclosing scope is taken over: a refused block leaves it installed.
CreatePiecesScope::CreatePiecesScope(CreatePieces pieces) {
  auto next = std::make_shared<const CreatePieces>(checked(std::move(pieces)));
  previous_ = std::move(current_pieces);
  current_pieces = std::move(next);
}
CreatePiecesScope::~CreatePiecesScope() { current_pieces = std::move(previous_); }

EvalShapeScope::EvalShapeScope() : previous_(eval_shape) { eval_shape = true; }
EvalShapeScope::~EvalShapeScope() { eval_shape = previous_; }

Creation creation_of(const AxisSpec& shape) {
  Creation c;
  c.axes = shape;
  c.meta = eval_shape;
  if (!current_pieces) return c;
  for (size_t d = 0; d < c.axes.size(); ++d) {
    auto it = current_pieces->split.find(c.axes[d].name);
    if (it == current_pieces->split.end() || it->second.first == 1) continue;
    const auto [pieces, index] = it->second;
    const int64_t size = c.axes[d].size;
    if (size % pieces != 0) {
      value_error("creating in pieces: axis '" + c.axes[d].name + "' of size " + std::to_string(size) +
                  " does not split evenly into " + std::to_string(pieces) + " pieces");
    }
    if (c.begin.empty()) c.begin.assign(c.axes.size(), 0);
    c.axes[d].size = size / pieces;
    c.begin[d] = index * c.axes[d].size;
  }
  return c;
}

}  // namespace haliax

// --- Tensor parallelism inside the model ----------------------------------------------------------------------

namespace haliax {

namespace {

thread_local std::shared_ptr<const TensorParallel> current_tp;

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct AllReduceHolder : torch::CustomClassHolder {
  std::function<void(at::Tensor&)> all_reduce;
};

at::Tensor summed(const std::function<void(at::Tensor&)>& all_reduce, const at::Tensor& t) {
  at::Tensor out = t.contiguous().clone();
  all_reduce(out);
  return out;
}

// Megatron's conjugate pair. Each one's backward is the other, applied as an autograd function, so that a backward
// recorded with create_graph (Sophia-H's Hessian-vector products) is differentiated again correctly: the gradient of
// f's backward (a sum of partial gradients) is g's, and the other way round. Without create_graph they compute as
// plain ops: the same values.

// g: the sum over processes forward; the gradient unchanged (f applied to it).
struct SumPartialResults : public torch::autograd::Function<SumPartialResults> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::intrusive_ptr<AllReduceHolder> h) {
    ctx->saved_data["h"] = c10::IValue::make_capsule(h);
    return summed(h->all_reduce, x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g);
};

// f: the identity forward; the gradient summed over processes (g applied to it).
struct SumGradientPartials : public torch::autograd::Function<SumGradientPartials> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::intrusive_ptr<AllReduceHolder> h) {
    ctx->saved_data["h"] = c10::IValue::make_capsule(h);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    auto h = c10::static_intrusive_pointer_cast<AllReduceHolder>(ctx->saved_data["h"].toCapsule());
    return {g[0].defined() ? SumPartialResults::apply(g[0], h) : g[0], at::Tensor()};
  }
};

variable_list SumPartialResults::backward(AutogradContext* ctx, variable_list g) {
  auto h = c10::static_intrusive_pointer_cast<AllReduceHolder>(ctx->saved_data["h"].toCapsule());
  return {g[0].defined() ? SumGradientPartials::apply(g[0], h) : g[0], at::Tensor()};
}

c10::intrusive_ptr<AllReduceHolder> holder() {
  auto h = c10::make_intrusive<AllReduceHolder>();
  h->all_reduce = current_tp->all_reduce;
  return h;
}

}  // namespace

TensorParallelScope::TensorParallelScope(std::shared_ptr<const TensorParallel> tp) : previous_(std::move(current_tp)) {
  current_tp = std::move(tp);
}
TensorParallelScope::~TensorParallelScope() { current_tp = std::move(previous_); }
const std::shared_ptr<const TensorParallel>& TensorParallelScope::current() { return current_tp; }

bool is_split(const std::string& axis) { return current_tp && current_tp->split.count(axis) > 0; }

NamedArray sum_partial_results(const NamedArray& x) {
  if (!current_tp) return x;
  return NamedArray(SumPartialResults::apply(x.array(), holder()), x.axes());
}

NamedArray sum_gradient_partials(const NamedArray& x) {
  if (!current_tp || !x.array().requires_grad()) return x;
  return NamedArray(SumGradientPartials::apply(x.array(), holder()), x.axes());
}

std::vector<NamedArray> prepare_contraction(const std::vector<NamedArray>& operands, const AxisSpec& output,
                                            bool* sum_result) {
  *sum_result = false;
  if (!current_tp) return operands;
  auto whole_size = [](const std::string& s) -> std::optional<int64_t> {
    auto it = current_tp->whole.find(s);
    return it == current_tp->whole.end() ? std::nullopt : std::optional<int64_t>(it->second);
  };
  // The split axes some operand holds a piece of (an axis every operand holds whole needs nothing).
  std::set<std::string> split;
  for (const NamedArray& a : operands) {
    for (const Axis& ax : a.axes()) {
      if (!is_split(ax.name)) continue;
      const std::optional<int64_t> w = whole_size(ax.name);
      if (!w || ax.size != *w) split.insert(ax.name);
    }
  }
  for (const std::string& s : split) *sum_result = *sum_result || !index_of(output, s);
  std::vector<NamedArray> out = operands;
  if (split.empty()) return out;
  std::vector<bool> cut(out.size(), false);
  // An operand that holds a split axis whole (computed whole on every process, where another operand holds its
  // piece) is cut to this process's block; its gradient, a block of the whole on each process, is then summed.
  for (const std::string& s : split) {
    const auto [pieces, index] = current_tp->split.at(s);
    const std::optional<int64_t> w = whole_size(s);
    int64_t piece = w ? *w / pieces : -1;
    for (const NamedArray& a : out) {
      if (auto i = index_of(a.axes(), s); i && !w)
        piece = piece < 0 ? a.axes()[*i].size : std::min(piece, a.axes()[*i].size);
    }
    for (size_t k = 0; k < out.size(); ++k) {
      NamedArray& a = out[k];
      auto i = index_of(a.axes(), s);
      if (!i || a.axes()[*i].size == piece) continue;
      if (a.axes()[*i].size != piece * pieces) {
        value_error("tensor parallelism: axis '" + s + "' has size " + std::to_string(a.axes()[*i].size) +
                    " in one operand and " + std::to_string(piece) + " in another, neither whole nor a piece of " +
                    std::to_string(pieces));
      }
      AxisSpec axes = a.axes();
      axes[*i].size = piece;
      if (cut[k]) value_error("tensor parallelism: an operand holds two split axes whole; cut it to one first");
      a = NamedArray(sum_gradient_partials(a).array().narrow(static_cast<int64_t>(*i), index * piece, piece), axes);
      cut[k] = true;
    }
  }
  for (size_t k = 0; k < out.size(); ++k) {
    bool lacks = false;
    for (const std::string& s : split) lacks = lacks || !out[k].has_axis(s);
    if (!lacks) continue;
    // A cut operand's block of the gradient would need the other axis's partial sums from the processes holding
    // other blocks: not one sum over the processes.
    if (cut[k])
      value_error("tensor parallelism: an operand holds one split axis whole and lacks another; not supported");
    out[k] = sum_gradient_partials(out[k]);
  }
  return out;
}

AxisSpec whole_axes(const AxisSpec& local) {
  AxisSpec out = local;
  if (!current_tp) return out;
  for (Axis& a : out) {
    auto it = current_tp->split.find(a.name);
    if (it != current_tp->split.end()) a.size *= it->second.first;
  }
  return out;
}

NamedArray local_piece(const NamedArray& whole) {
  if (!current_tp) return whole;
  at::Tensor t = whole.array();
  AxisSpec axes = whole.axes();
  for (size_t d = 0; d < axes.size(); ++d) {
    auto it = current_tp->split.find(axes[d].name);
    if (it == current_tp->split.end()) continue;
    const int64_t k = axes[d].size / it->second.first;
    t = t.narrow(static_cast<int64_t>(d), it->second.second * k, k);
    axes[d].size = k;
  }
  return NamedArray(t, axes);
}

ComputeBlock compute_block_of(const std::string& axis, int64_t size, int64_t pieces, int64_t index) {
  ComputeBlock b;
  b.pieces = pieces;
  b.index = index;
  b.stride = (size + b.pieces - 1) / b.pieces;
  b.begin = std::min(size, b.index * b.stride);
  b.end = std::min(size, b.begin + b.stride);
  if ((b.pieces - 1) * b.stride >= size) {
    value_error("tensor parallelism: axis '" + axis + "' of size " + std::to_string(size) + " cannot be cut into " +
                std::to_string(b.pieces) + " blocks of " + std::to_string(b.stride) + " without an empty one");
  }
  return b;
}

std::optional<ComputeBlock> compute_block(const std::string& axis, int64_t size) {
  if (!current_tp) return std::nullopt;
  auto it = current_tp->split_compute.find(axis);
  if (it == current_tp->split_compute.end()) return std::nullopt;
  ComputeBlock b = compute_block_of(axis, size, it->second.first, it->second.second);
  if (!current_tp->all_gather)
    value_error("tensor parallelism: axis '" + axis +
                "' is split in compute, but the scope has no all_gather to join the blocks of its gradients");
  b.tp = current_tp;
  return b;
}

}  // namespace haliax
