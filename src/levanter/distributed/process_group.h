// The processes of one training job, over PyTorch's own distributed engine (c10d: a TCPStore at the coordinator's
// address for the rendezvous, a Gloo process group for collectives on CPU tensors).
//
// Reproducibility: sum_in_rank_order adds the ranks' tensors in rank order, ((t0 + t1) + t2) + ..., element by
// element, on every rank. Gloo's own allreduce adds in an order that depends on the algorithm and the number of
// processes; ours is the order in which one process accumulates its microbatches' gradients, so N processes with
// one microbatch each reproduce one process with N microbatches bit for bit (tests/levanter/distributed/).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "levanter/distributed/config.h"

namespace levanter::distributed {

// A collective failed: another process died, or did not arrive within the timeout.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ProcessGroup {
 public:
  // Connects the `info.world_size` processes (blocking until all have arrived, at most `timeout`). With one process,
  // nothing is opened and every collective is the identity.
  static std::unique_ptr<ProcessGroup> connect(const ProcessInfo& info, std::chrono::seconds timeout);
  ~ProcessGroup();

  // The processes `ranks` of this group (this one among them; in the order given) as a group of their own, numbered
  // by their position in `ranks`: collectives over them only. Every process of the new group creates it with the
  // same `name` and `ranks` (the name keeps groups apart in the store; give each group its own). Collective among
  // those processes only.
  std::unique_ptr<ProcessGroup> subgroup(const std::string& name, const std::vector<int>& ranks);

  // Where a rank runs (exchanged when connecting): a failed collective names the ranks of this machine that are gone.
  struct Peer {
    std::string host;  // the host name and pid namespace: pids compare only within one
    int64_t pid = 0;
    int rank = 0;  // in the whole job
  };

  int rank() const { return info_.rank; }
  int size() const { return info_.world_size; }
  const ProcessInfo& info() const { return info_; }

  // Every tensor (contiguous, CPU, any floating dtype; the same shapes and dtypes on every rank) becomes the sum
  // over ranks in rank order. Works in buckets of at most `bucket_elements`, so the extra memory is about three
  // buckets.
  void sum_in_rank_order(std::vector<at::Tensor>& tensors, int64_t bucket_elements = int64_t{1} << 24);
  // FSDP's gradient exchange. full[i] has the same shape and dtype on every rank; its piece for rank r is block r of
  // N equal blocks along dims[i]. shards[i] (that piece's shape, the same dtype) receives this rank's piece summed
  // over the ranks in rank order: each element is the one sum_in_rank_order would give.
  void reduce_scatter_in_rank_order(const std::vector<at::Tensor>& full, const std::vector<int64_t>& dims,
                                    std::vector<at::Tensor>& shards, int64_t bucket_elements = int64_t{1} << 24);
  // FSDP's parameter gather, the inverse layout: block r of full[i] along dims[i] becomes rank r's shards[i]. full[i]
  // may have another floating dtype than shards[i] (copied as Tensor::copy_ converts, as to() rounds).
  void all_gather(const std::vector<at::Tensor>& shards, const std::vector<int64_t>& dims,
                  std::vector<at::Tensor>& full, int64_t bucket_elements = int64_t{1} << 24);
  // Rank 0's `value` on every rank (the argument of other ranks is ignored).
  std::string broadcast(const std::string& value);
  // Every rank's `value`, in rank order, on every rank.
  std::vector<std::string> all_gather(const std::string& value);
  // True on every rank if `flag` is true on any rank.
  bool any(bool flag);
  // The largest of every rank's `value`, on every rank (an all-reduce: nothing is left in the store).
  int64_t max(int64_t value);

 private:
  ProcessGroup() = default;
  // `send` (flat, contiguous, N equal chunks) -> this rank's chunk of every rank, added in rank order (all-to-all).
  at::Tensor sum_chunks_in_rank_order(const at::Tensor& send);
  ProcessInfo info_;
  std::chrono::seconds timeout_{600};
  std::string name_;         // a subgroup's name ("" for the whole job)
  std::string where_;        // "rank 1 of 2 (coordinator ...)", or in a subgroup also the group, for messages
  std::vector<Peer> peers_;  // per rank of this group (empty with one process)
  int64_t exchanges_ = 0;    // strings exchanged through the store so far (each under a key of its own)
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace levanter::distributed
