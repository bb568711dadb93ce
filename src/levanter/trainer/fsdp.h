// FSDP over processes: Levanter's parameter mapping ({fsdp_axis: data}) applied to the trainer's state.
//
// Every parameter with an axis that the mapping sends to the `data` mesh axis is held in pieces, one per process
// (haliax::shard); the optimizer's moments follow their parameter. A step gathers the pieces into the full compute
// copy (ProcessGroup::all_gather), runs forward and backward on it, and gives each process its piece of the summed
// gradient (reduce_scatter_in_rank_order: the sums data parallelism makes, element for element); the optimizer then
// updates only the pieces, with the gradient norm summed over processes. Parameters without such an axis are whole on
// every process and exchanged as in data parallelism.
//
// The same plan over the `model` mesh axis ({mlp: model, heads: model}) holds tensor parallelism's pieces: shard_,
// shard_optimizer_state, checkpoint_dims, whole_like, gather and sums_of_squares serve it, and the pieces are what the
// model computes with (under a haliax::TensorParallelScope), never gathered for a step.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "haliax/nn/stacked.h"
#include "haliax/partitioning.h"
#include "haliax/state_dict.h"
#include "levanter/models/lm_model.h"

namespace levanter::distributed {
class ProcessGroup;
}

namespace levanter::trainer {

class Fsdp {
 public:
  // When the pieces become whole (trainer.fsdp_gather): kStep gathers every parameter before the step's first forward
  // and keeps it to the end of backward (PyTorch FSDP's SHARD_GRAD_OP); kLayer gathers the parameters of each layer of
  // a Stacked module just before the layer runs, and again for its recomputation in backward under gradient
  // checkpointing, reduce-scattering their gradients as backward leaves the layer (FULL_SHARD): a process then holds
  // one whole layer at a time (plus the parameters outside the stack, gathered per step).
  enum class Unit { kStep, kLayer };

  // The plan for `full` (any dtype) on `mesh` under `mapping` (whose axes all map to mesh axis `axis`), for process
  // `rank`. Throws haliax::ValueError naming the parameter, the axis and the mesh axis when an axis does not split
  // evenly.
  Fsdp(const models::LmHeadModel& full, haliax::AxisMapping mapping, haliax::Mesh mesh, int rank,
       Unit unit = Unit::kStep, std::string axis = "data");
  Unit unit() const { return unit_; }

  // "embed over data (2 processes): 99.9% of the parameters in pieces"
  std::string describe() const;

  // In place: every split parameter of `model` (the full model) becomes this process's piece. A parameter that already
  // is (created in pieces under haliax::CreatePiecesScope) is kept; one that is neither throws std::logic_error.
  // Returns the paths of the parameters it cut.
  std::vector<std::string> shard_(models::LmHeadModel& model) const;
  // A full optimizer state (Optimizer::state_dict's keys) cut to this process's pieces.
  haliax::StateDict shard_optimizer_state(const haliax::StateDict& full) const;
  // The checkpoint's split dimensions (checkpoint::Sharding::dims) of groups "model" (to_state_dict keys) and
  // "opt_state" (Optimizer keys): group -> key -> mesh axis -> dimension.
  using CheckpointDims = std::map<std::string, std::map<std::string, std::map<std::string, int64_t>>>;
  CheckpointDims checkpoint_dims() const;

  // full's parameters <- every process's pieces of `pieces` (converted to full's dtypes); a parameter of `full` that
  // is itself a piece (kLayer's stacked parameters in the compute copy) is copied. Collective.
  void gather(distributed::ProcessGroup& pg, const models::LmHeadModel& pieces, models::LmHeadModel& full) const;
  // A model shaped as the whole one, in `dtype`, from the pieces' structure (contents undefined until gather). With
  // keep_layer_pieces, kLayer's stacked split parameters stay pieces: the compute copy, whose layers are gathered as
  // they run.
  std::unique_ptr<models::LmHeadModel> whole_like(const models::LmHeadModel& pieces, at::ScalarType dtype,
                                                  bool keep_layer_pieces = false) const;
  // kLayer: the per-layer gather to install (haliax::nn::LayerGather) around the forward and backward passes of
  // `compute_copy` (whose stacked split parameters are pieces). Each layer's gradients, widened to f32 and summed over
  // processes in rank order, are added to `(*layer_grads)[i]` (this process's piece, [layers, ...], made on first use)
  // for stacked parameter i; autograd sees no gradient for the pieces. Collective (in forward and backward).
  haliax::nn::LayerGatherFn layer_gather(distributed::ProcessGroup& pg, const models::LmHeadModel& compute_copy,
                                         std::shared_ptr<std::vector<at::Tensor>> layer_grads) const;
  bool gathered_by_layer(size_t i) const { return unit_ == Unit::kLayer && stacked_[i] && dims_[i] >= 0; }
  // Full-shape gradients (one per parameter; undefined: none, the same on every process) -> this process's pieces
  // of their sum over processes (whole parameters: the whole sum). A gradient that is already a piece (kLayer's,
  // summed in backward) is passed through; a whole one of a layer-gathered parameter (Sophia's estimate on a whole
  // copy) is cut like any other. Collective.
  std::vector<at::Tensor> reduce_gradients(distributed::ProcessGroup& pg, std::vector<at::Tensor> full) const;
  // Whole-shape tensors (one per parameter, in the plan's order; undefined stays undefined) -> this process's pieces
  // (whole parameters: the tensor itself). Local: no exchange.
  std::vector<at::Tensor> pieces_of(std::vector<at::Tensor> whole) const;
  // The same for parameter i's tensor alone.
  at::Tensor piece_of(size_t i, const at::Tensor& whole) const;
  // The parameters' whole shapes, in the plan's order.
  std::vector<std::vector<int64_t>> whole_shapes() const;
  // This process's per-parameter sums of squares of its gradient pieces -> each parameter's sum over the processes
  // of `pg` (rank order): split parameters summed, whole ones (the same everywhere) counted once. Collective.
  std::vector<double> sums_of_squares(distributed::ProcessGroup& pg, const std::vector<double>& local) const;

 private:
  haliax::AxisMapping mapping_;
  haliax::Mesh mesh_;
  int rank_ = 0;
  std::string axis_;  // the mesh axis the plan splits over: data (FSDP) or model (tensor parallelism)
  std::vector<std::string> paths_;
  std::vector<int64_t> dims_;
  Unit unit_ = Unit::kStep;
  std::vector<bool> stacked_;                      // per parameter: of a Stacked module (layer axis first)
  std::vector<haliax::AxisSpec> axes_;             // per parameter: the whole axes
  std::map<std::string, int64_t> model_key_dims_;  // to_state_dict key -> split dim (split ones only)
};

}  // namespace levanter::trainer
