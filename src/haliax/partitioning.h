// Partitioning by name (Haliax's haliax.partitioning): which piece of a named array each process holds.
//
// A Mesh is a grid of processes with named axes (Levanter's are `replica`, `data` and `model`); rank r sits at the
// row-major coordinates of r in it (the last mesh axis varies fastest). An AxisMapping maps logical axis names
// (`embed`, `mlp`, `batch`) to mesh axes: Levanter's parameter mapping {embed: data} shards every parameter that
// has an `embed` axis over the processes of the `data` axis (FSDP); {mlp: model, heads: model} splits those axes
// over the `model` axis (tensor parallelism). An array axis mapped to a mesh axis of size k is cut into k equal
// contiguous blocks, and the process at coordinate c on that mesh axis holds block c.
//
// Everything here is pure: which piece, of what size, where. Moving the pieces between processes is the job of
// the process group (levanter/distributed/process_group.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "haliax/axis.h"
#include "haliax/named_array.h"

namespace haliax {

// Logical axis name -> mesh axis name (Haliax's ResourceMapping with one mesh axis per logical axis). Ordered, so
// iterating it never depends on hashing.
using AxisMapping = std::map<std::string, std::string>;

class Mesh {
 public:
  // Axes in order, e.g. {{"replica", 1}, {"data", 2}, {"model", 1}}. Names must be unique, sizes positive.
  explicit Mesh(std::vector<std::pair<std::string, int64_t>> axes);

  const std::vector<std::pair<std::string, int64_t>>& axes() const { return axes_; }
  int64_t size() const;  // the number of processes
  bool has_axis(const std::string& name) const;
  // Throws naming the axis and the mesh's axes if `name` is not one of them.
  int64_t axis_size(const std::string& name) const;
  // Rank `rank`'s coordinate along mesh axis `name`.
  int64_t coordinate(int64_t rank, const std::string& name) const;

 private:
  std::vector<std::pair<std::string, int64_t>> axes_;
};

// The mesh axis `axis` is mapped to, if any (Haliax's physical_axis_name).
std::optional<std::string> physical_axis_name(const std::string& axis, const AxisMapping& mapping);
// How many pieces `axis` is cut into under `mapping` on `mesh`: the mesh axis's size, or 1 when unmapped (Haliax's
// physical_axis_size).
int64_t physical_axis_size(const std::string& axis, const AxisMapping& mapping, const Mesh& mesh);

// Per array axis, the mesh axis it is split over (nullopt: whole on every process), as a PartitionSpec (Haliax's
// pspec_for). Throws naming both axes when two axes of one array map to the same mesh axis, and naming the axis,
// its size, the mesh axis and its size when the size does not divide evenly. `what` (e.g. a parameter's path)
// starts the message.
std::vector<std::optional<std::string>> pspec_for(const std::vector<Axis>& axes, const AxisMapping& mapping,
                                                  const Mesh& mesh, const std::string& what = "");

// The axes of the piece one process holds: split axes have size / pieces.
std::vector<Axis> local_axes(const std::vector<Axis>& axes, const AxisMapping& mapping, const Mesh& mesh,
                             const std::string& what = "");

// The piece of `x` that process `rank` holds (Haliax's shard, for one process): a contiguous copy, with the local
// axes. Unmapped axes are whole. Checks as pspec_for.
NamedArray shard(const NamedArray& x, const AxisMapping& mapping, const Mesh& mesh, int64_t rank,
                 const std::string& what = "");

// --- Creating in pieces, or only the shapes ---------------------------------------------------------------------
//
// Levanter builds a sharded model without any device holding it whole: eqx.filter_eval_shape gives the parameters'
// shapes, and the initialisation, jitted with the parameter mapping as its output sharding, computes each device's
// pieces alone. The same two steps here, for code that creates its arrays with haliax's creation functions (zeros,
// ones, full, and every draw of haliax::random made from a shape alone: bits, uniform, normal, truncated_normal,
// bernoulli with a probability, randint, exponential, laplace, logistic, cauchy, rademacher, gumbel), as nn::Linear,
// Embedding, LayerNorm, RmsNorm and Stacked's inits do:
//   - under an EvalShapeScope they are created on ATen's meta device: shapes and dtypes, no data, nothing drawn;
//   - under a CreatePiecesScope an array with an axis in `split` is created as block `index` of `pieces` equal
//     contiguous blocks of that axis (shard()'s block). A random draw's piece holds exactly the elements of the whole
//     draw at those positions, since Threefry's bits depend only on the key and each element's index in the whole
//     array (JAX's jax_threefry_partitionable), and the draws' transforms are elementwise. So a model built under the
//     scope equals its whole initialisation cut with shard(), bit for bit, and only this process's pieces are drawn.
// Both apply to the thread that installs them, until the scope ends; nothing else (permutation, categorical,
// bernoulli with an array of probabilities, arange, operations on existing arrays) is affected.
struct CreatePieces {
  // Logical axis -> (pieces, this process's block index).
  std::map<std::string, std::pair<int64_t, int64_t>> split;
};

class CreatePiecesScope {
 public:
  explicit CreatePiecesScope(CreatePieces pieces);
  ~CreatePiecesScope();
  CreatePiecesScope(const CreatePiecesScope&) = delete;
  CreatePiecesScope& operator=(const CreatePiecesScope&) = delete;

 private:
  std::shared_ptr<const CreatePieces> previous_;
};

class EvalShapeScope {
 public:
  EvalShapeScope();
  ~EvalShapeScope();
  EvalShapeScope(const EvalShapeScope&) = delete;
  EvalShapeScope& operator=(const EvalShapeScope&) = delete;

 private:
  bool previous_;
};

// What a creation function makes of `shape` under the installed scopes (used by haliax's creation functions).
struct Creation {
  AxisSpec axes;               // the array to create: `shape`, each split axis its block's size
  std::vector<int64_t> begin;  // per dimension, the block's first index in the whole array (empty: nothing is cut)
  bool meta = false;           // on ATen's meta device
};
// Throws naming the axis, its size and the pieces when a split axis of `shape` does not divide evenly.
Creation creation_of(const AxisSpec& shape);

// --- Tensor parallelism inside the model ----------------------------------------------------------------------
//
// While a TensorParallelScope is installed on this thread, the model runs on this process's pieces of the split
// axes (its parameters were cut with shard(); `mlp` and `heads` under Levanter's default {mlp: model, heads: model}),
// and haliax's contractions (dot, nn::Linear) communicate where the pieces meet, as Megatron-LM's f and g do:
//   - a contraction over a split axis gives this process's partial sum: the result is summed over the processes
//     (sum_partial_results; its gradient passes through unchanged);
//   - an operand without a split axis that another operand has (x in x·W with W split along its output) gets, in
//     backward, only this process's share of its gradient: the gradient is summed over the processes
//     (sum_gradient_partials; the identity forward).
// Each one's backward applies the other, so second derivatives (create_graph) exchange correctly too.
// Elementwise operations and contractions over whole axes need nothing: the model code does not change. Random bits
// for an array with split axes (Dropout) are drawn for the whole array and cut, so they do not depend on the
// process count.
struct TensorParallel {
  // Logical axis -> (pieces, this process's block index).
  std::map<std::string, std::pair<int64_t, int64_t>> split;
  // Logical axis -> its whole size, where known (the trainer gives them): an operand holding a split axis at that
  // size is then known to hold it whole. Unknown, an axis that every operand of a contraction holds at one size is
  // taken for a piece.
  std::map<std::string, int64_t> whole;
  // Sums `t` (contiguous, CPU) in place over the processes that hold the other pieces; every process gets the same
  // bits. Captured by the autograd nodes it creates, so backward need not run inside the scope.
  std::function<void(at::Tensor&)> all_reduce;
  // Logical axis -> (pieces, this process's block index): axes that the parameters hold whole, but that the
  // computations written for it split over the processes (the vocabulary, in the fused LM head and loss of
  // levanter/models/lm_loss.h). No piece of a parameter is cut, so the axis need not divide: see compute_block.
  std::map<std::string, std::pair<int64_t, int64_t>> split_compute;
  // Block r of `whole` along dim 0 <- process r's `piece` (the same shape on every process; whole has pieces times
  // its rows). Needed by split_compute's computations, which gather their blocks of a whole parameter's gradient.
  std::function<void(const at::Tensor& piece, at::Tensor& whole)> all_gather;
};

class TensorParallelScope {
 public:
  explicit TensorParallelScope(std::shared_ptr<const TensorParallel> tp);
  ~TensorParallelScope();
  TensorParallelScope(const TensorParallelScope&) = delete;
  TensorParallelScope& operator=(const TensorParallelScope&) = delete;
  // The installed description, or null (one process holds every axis whole).
  static const std::shared_ptr<const TensorParallel>& current();

 private:
  std::shared_ptr<const TensorParallel> previous_;
};

// Under the current scope (identities without one):
bool is_split(const std::string& axis);
// Megatron's g: forward sums over the processes, backward passes the gradient through.
NamedArray sum_partial_results(const NamedArray& x);
// Megatron's f: forward is the identity, backward sums the gradient over the processes.
NamedArray sum_gradient_partials(const NamedArray& x);
// What a contraction of `operands` into `output` needs: operands[i] passed through sum_gradient_partials when another
// operand has a split axis it lacks; `*sum_result` when a split axis is contracted away (absent from `output`).
std::vector<NamedArray> prepare_contraction(const std::vector<NamedArray>& operands, const AxisSpec& output,
                                            bool* sum_result);
// The axes of the whole array of which `local` describes this process's piece (split axes times their pieces).
AxisSpec whole_axes(const AxisSpec& local);
// This process's piece of `whole` (an array laid out on whole_axes): each split axis narrowed to its block.
NamedArray local_piece(const NamedArray& whole);

// The block of an axis of `size` elements that this process computes when the axis is in the current scope's
// split_compute: `pieces` blocks of ceil(size / pieces) elements, the last one shorter when the size does not divide
// (GPT-2's 50257 over 2 processes: 25129 and 25128). Nullopt without a scope or when the axis is not split in
// compute. Throws naming the axis when a block would be empty.
struct ComputeBlock {
  int64_t begin = 0, end = 0;  // [begin, end) of the axis
  int64_t stride = 0;          // ceil(size / pieces): every block's length before the last one's cut
  int64_t pieces = 1, index = 0;
  std::shared_ptr<const TensorParallel> tp;
};
std::optional<ComputeBlock> compute_block(const std::string& axis, int64_t size);
// Block `index` of `pieces` of an axis of `size` elements, without a scope (tp stays null): the same cut and the same
// refusal of an empty block, for checking a split before anything runs.
ComputeBlock compute_block_of(const std::string& axis, int64_t size, int64_t pieces, int64_t index);

}  // namespace haliax
