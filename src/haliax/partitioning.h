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
#include <map>
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

}  // namespace haliax
