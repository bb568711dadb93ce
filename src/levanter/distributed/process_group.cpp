#include "levanter/distributed/process_group.h"

#include "levanter/runtime/process.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <unistd.h>

#include <algorithm>
#include <map>
#include <thread>

namespace levanter::distributed {

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> options;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
};

namespace {

std::string where(const ProcessInfo& info) {
  return "rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) + " (coordinator " +
         info.master_addr + ":" + std::to_string(info.master_port) + ")";
}

// The ranks of this machine whose process has ended (or is a zombie), for a failed collective's message: "; rank 1
// (pid 4242 on this machine) is no longer running". Ranks elsewhere cannot be checked from here.
bool process_gone(int64_t pid) { return !runtime::process_exists(pid) || runtime::process_state(pid) == 'Z'; }

// Where this process's pids mean something: the host name and the pid namespace ("node1 pid:[4026531836]"), so that
// containers sharing a host name but not their pids are not taken for one machine.
std::string pid_space() {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  char ns[128] = {0};
  const ssize_t n = ::readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
  return std::string(host) + (n > 0 ? " " + std::string(ns, static_cast<size_t>(n)) : std::string());
}

std::string gone_peers(const std::vector<ProcessGroup::Peer>& peers) {
  const std::string host = pid_space();
  bool remote = false;
  // A peer's sockets close while it exits, a moment before it shows as ended: look again for up to a second.
  for (int attempt = 0; attempt < 20; ++attempt) {
    std::string out;
    for (const ProcessGroup::Peer& p : peers) {
      if (p.host != host) {
        remote = true;
      } else if (process_gone(p.pid)) {
        out += "; rank " + std::to_string(p.rank) + " (pid " + std::to_string(p.pid) +
               " on this machine) is no longer running";
      }
    }
    if (!out.empty()) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return remote ? "; every rank on this machine is still running (one on another machine may not be)" : "";
}

template <typename F>
auto collective(const std::string& where, const std::vector<ProcessGroup::Peer>& peers, const char* what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    throw CollectiveError(std::string(what) + " failed on " + where +
                          ": another process died or did not arrive in time (trainer.distributed.timeout)" +
                          gone_peers(peers) + ": " + e.what());
  }
}

}  // namespace

std::unique_ptr<ProcessGroup> ProcessGroup::connect(const ProcessInfo& info, std::chrono::seconds timeout) {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  pg->info_ = info;
  pg->where_ = where(info);
  pg->timeout_ = timeout;
  if (!info.distributed()) return pg;
  pg->impl_ = std::make_unique<Impl>();
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(info.master_port);
    o.isServer = info.rank == 0;
    o.numWorkers = info.world_size;
    o.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
    pg->impl_->store = c10::make_intrusive<c10d::TCPStore>(info.master_addr, o);
    auto options =
        c10d::ProcessGroupGloo::Options::create(std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
    // The interface that reaches the coordinator: loopback for a job on one machine.
    const bool local = info.master_addr == "127.0.0.1" || info.master_addr == "localhost";
    options->devices.push_back(local ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                     : c10d::ProcessGroupGloo::createDefaultDevice());
    pg->impl_->options = options;
    pg->impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("levanter", pg->impl_->store), info.rank, info.world_size, options);
  } catch (const std::exception& e) {
    throw CollectiveError("could not connect " + where(info) + " within " + std::to_string(timeout.count()) +
                          " s: " + e.what());
  }
  // Where each rank runs, for naming one that has died (collective errors).
  for (const std::string& v : pg->all_gather(pid_space() + " " + std::to_string(::getpid()))) {
    const size_t space = v.rfind(' ');
    pg->peers_.push_back({v.substr(0, space), std::stoll(v.substr(space + 1)), static_cast<int>(pg->peers_.size())});
  }
  return pg;
}

ProcessGroup::~ProcessGroup() = default;

std::unique_ptr<ProcessGroup> ProcessGroup::subgroup(const std::string& name, const std::vector<int>& ranks) {
  auto me = std::find(ranks.begin(), ranks.end(), rank());
  if (me == ranks.end() || name.empty())
    throw std::logic_error("ProcessGroup::subgroup: rank " + std::to_string(rank()) + " is not in group " + name);
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  pg->info_ = info_;
  pg->info_.rank = static_cast<int>(me - ranks.begin());
  pg->info_.world_size = static_cast<int>(ranks.size());
  pg->timeout_ = timeout_;
  pg->name_ = (name_.empty() ? "" : name_ + "/") + name;
  pg->where_ = "rank " + std::to_string(pg->info_.rank) + " of " + std::to_string(ranks.size()) + " in group " +
               pg->name_ + " (" + where_ + ")";
  for (int r : ranks) {
    if (r < 0 || static_cast<size_t>(r) >= peers_.size())
      throw std::logic_error("ProcessGroup::subgroup: no rank " + std::to_string(r) + " in a group of " +
                             std::to_string(size()));
    pg->peers_.push_back(peers_[static_cast<size_t>(r)]);
  }
  if (ranks.size() == 1) return pg;
  pg->impl_ = std::make_unique<Impl>();
  pg->impl_->store = c10::make_intrusive<c10d::PrefixStore>("group/" + pg->name_, impl_->store);
  pg->impl_->options = impl_->options;
  collective(where_, peers_, ("connecting group " + pg->name_).c_str(), [&] {
    pg->impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("levanter", pg->impl_->store), pg->info_.rank, pg->info_.world_size,
        impl_->options);
  });
  return pg;
}

namespace {

// Consecutive runs of `indices` with at most `limit` elements each (one tensor alone may exceed it).
template <typename F>
void for_each_bucket(const std::vector<size_t>& indices, const std::vector<int64_t>& numel, int64_t limit, F&& f) {
  size_t begin = 0;
  while (begin < indices.size()) {
    size_t end = begin;
    int64_t n = 0;
    while (end < indices.size() && (end == begin || n + numel[indices[end]] <= limit)) n += numel[indices[end++]];
    f(begin, end, n);
    begin = end;
  }
}

// What Gloo carries: bfloat16 (which it does not know) as float16 of the same width; collectives that only move bits
// (all-to-all, all-gather) are then exact.
at::Tensor wire(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 ? t.view(at::kHalf) : t; }

// f(i, offset) for the tensors indices[begin, end) of one bucket, laid end to end in a flat buffer from `start`.
template <typename F>
void each_in_bucket(const std::vector<size_t>& indices, size_t begin, size_t end, const std::vector<int64_t>& numel,
                    int64_t start, F&& f) {
  for (size_t j = begin; j < end; ++j) {
    f(indices[j], start);
    start += numel[indices[j]];
  }
}

at::Tensor block(const at::Tensor& t, int64_t dim, int64_t r, int64_t N) {
  const int64_t k = t.size(dim) / N;
  return t.narrow(dim, r * k, k);
}

}  // namespace

at::Tensor ProcessGroup::sum_chunks_in_rank_order(const at::Tensor& send) {
  const int64_t N = size(), chunk = send.numel() / N;
  at::Tensor received = at::empty({chunk * N}, send.options());
  std::vector<int64_t> equal;
  collective(where_, peers_, "gradient exchange (alltoall)", [&] {
    at::Tensor out = wire(received), in = wire(send);
    impl_->gloo->alltoall_base(out, in, equal, equal)->wait(timeout_);
  });
  at::Tensor mine = received.narrow(0, 0, chunk).clone();
  for (int64_t r = 1; r < N; ++r) mine.add_(received.narrow(0, r * chunk, chunk));
  return mine;
}

void ProcessGroup::sum_in_rank_order(std::vector<at::Tensor>& tensors, int64_t bucket_elements) {
  if (size() == 1 || tensors.empty()) return;
  const int64_t N = size();
  // One flat buffer per dtype and bucket; tensors in their given order.
  std::map<at::ScalarType, std::vector<size_t>> by_dtype;
  std::vector<int64_t> numel(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    by_dtype[tensors[i].scalar_type()].push_back(i);
    numel[i] = tensors[i].numel();
  }
  for (auto& [dtype, indices] : by_dtype) {
    for_each_bucket(indices, numel, bucket_elements, [&](size_t begin, size_t end, int64_t n) {
      const int64_t chunk = (n + N - 1) / N;
      at::Tensor flat = at::zeros({chunk * N}, at::TensorOptions().dtype(dtype));
      each_in_bucket(indices, begin, end, numel, 0, [&](size_t i, int64_t offset) {
        flat.narrow(0, offset, numel[i]).copy_(tensors[i].reshape({-1}));
      });
      // Rank r receives chunk r of every rank (in rank order), adds them in rank order, and all gather the sums.
      at::Tensor mine = sum_chunks_in_rank_order(flat);
      std::vector<std::vector<at::Tensor>> out(1);
      for (int64_t r = 0; r < N; ++r) out[0].push_back(wire(flat.narrow(0, r * chunk, chunk)));
      std::vector<at::Tensor> in{wire(mine)};
      collective(where_, peers_, "gradient exchange (allgather)",
                 [&] { impl_->gloo->allgather(out, in)->wait(timeout_); });
      each_in_bucket(indices, begin, end, numel, 0, [&](size_t i, int64_t offset) {
        tensors[i].copy_(flat.narrow(0, offset, numel[i]).view(tensors[i].sizes()));
      });
    });
  }
}

void ProcessGroup::reduce_scatter_in_rank_order(const std::vector<at::Tensor>& full, const std::vector<int64_t>& dims,
                                                std::vector<at::Tensor>& shards, int64_t bucket_elements) {
  if (full.size() != dims.size() || full.size() != shards.size())
    throw std::invalid_argument("reduce_scatter_in_rank_order: full, dims and shards differ in length");
  const int64_t N = size();
  std::map<at::ScalarType, std::vector<size_t>> by_dtype;
  std::vector<int64_t> piece(full.size());
  for (size_t i = 0; i < full.size(); ++i) {
    if (full[i].size(dims[i]) % N != 0) {
      throw std::invalid_argument("reduce_scatter_in_rank_order: dimension " + std::to_string(dims[i]) + " of size " +
                                  std::to_string(full[i].size(dims[i])) + " does not split over " + std::to_string(N) +
                                  " processes");
    }
    piece[i] = full[i].numel() / N;
    by_dtype[full[i].scalar_type()].push_back(i);
  }
  if (N == 1) {
    for (size_t i = 0; i < full.size(); ++i) shards[i].copy_(full[i]);
    return;
  }
  for (auto& [dtype, indices] : by_dtype) {
    for_each_bucket(indices, piece, bucket_elements, [&](size_t begin, size_t end, int64_t n) {
      // Send buffer: for each destination rank r, block r of every tensor of the bucket, in order.
      at::Tensor send = at::empty({n * N}, at::TensorOptions().dtype(dtype));
      for (int64_t r = 0; r < N; ++r) {
        each_in_bucket(indices, begin, end, piece, r * n, [&](size_t i, int64_t offset) {
          at::Tensor b = block(full[i], dims[i], r, N);
          send.narrow(0, offset, piece[i]).view(b.sizes()).copy_(b);
        });
      }
      at::Tensor mine = sum_chunks_in_rank_order(send);  // rank r's blocks, from ranks 0, 1, ..., added in that order
      each_in_bucket(indices, begin, end, piece, 0, [&](size_t i, int64_t offset) {
        shards[i].copy_(mine.narrow(0, offset, piece[i]).view(shards[i].sizes()));
      });
    });
  }
}

void ProcessGroup::all_gather(const std::vector<at::Tensor>& shards, const std::vector<int64_t>& dims,
                              std::vector<at::Tensor>& full, int64_t bucket_elements) {
  if (full.size() != dims.size() || full.size() != shards.size())
    throw std::invalid_argument("all_gather: shards, dims and full differ in length");
  const int64_t N = size();
  std::map<at::ScalarType, std::vector<size_t>> by_dtype;
  std::vector<int64_t> piece(shards.size());
  for (size_t i = 0; i < shards.size(); ++i) {
    if (full[i].size(dims[i]) != shards[i].size(dims[i]) * N) {
      throw std::invalid_argument("all_gather: dimension " + std::to_string(dims[i]) + " of size " +
                                  std::to_string(full[i].size(dims[i])) + " is not " + std::to_string(N) +
                                  " pieces of " + std::to_string(shards[i].size(dims[i])));
    }
    piece[i] = shards[i].numel();
    by_dtype[shards[i].scalar_type()].push_back(i);
  }
  if (N == 1) {
    for (size_t i = 0; i < full.size(); ++i) full[i].copy_(shards[i]);
    return;
  }
  for (auto& [dtype, indices] : by_dtype) {
    for_each_bucket(indices, piece, bucket_elements, [&](size_t begin, size_t end, int64_t n) {
      at::Tensor mine = at::empty({n}, at::TensorOptions().dtype(dtype));
      each_in_bucket(indices, begin, end, piece, 0, [&](size_t i, int64_t offset) {
        mine.narrow(0, offset, piece[i]).view(shards[i].sizes()).copy_(shards[i]);
      });
      at::Tensor gathered = at::empty({n * N}, mine.options());
      std::vector<std::vector<at::Tensor>> out(1);
      for (int64_t r = 0; r < N; ++r) out[0].push_back(wire(gathered.narrow(0, r * n, n)));
      std::vector<at::Tensor> in{wire(mine)};
      collective(where_, peers_, "parameter gather (allgather)",
                 [&] { impl_->gloo->allgather(out, in)->wait(timeout_); });
      for (int64_t r = 0; r < N; ++r) {
        each_in_bucket(indices, begin, end, piece, r * n, [&](size_t i, int64_t offset) {
          block(full[i], dims[i], r, N).copy_(gathered.narrow(0, offset, piece[i]).view(shards[i].sizes()));
        });
      }
    });
  }
}

std::string ProcessGroup::broadcast(const std::string& value) {
  if (size() == 1) return value;
  const std::string key = "levanter/broadcast/" + std::to_string(exchanges_++);
  return collective(where_, peers_, "broadcast (store)", [&] {
    if (rank() == 0) {
      impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
      return value;
    }
    std::vector<uint8_t> v = impl_->store->get(key);
    return std::string(v.begin(), v.end());
  });
}

std::vector<std::string> ProcessGroup::all_gather(const std::string& value) {
  if (size() == 1) return {value};
  const std::string key = "levanter/gather/" + std::to_string(exchanges_++) + "/";
  return collective(where_, peers_, "gather (store)", [&] {
    impl_->store->set(key + std::to_string(rank()), std::vector<uint8_t>(value.begin(), value.end()));
    std::vector<std::string> out;
    for (int r = 0; r < size(); ++r) {
      std::vector<uint8_t> v = impl_->store->get(key + std::to_string(r));
      out.emplace_back(v.begin(), v.end());
    }
    return out;
  });
}

int64_t ProcessGroup::max(int64_t value) {
  if (size() == 1) return value;
  std::vector<at::Tensor> t{at::full({1}, value, at::kLong)};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  collective(where_, peers_, "agreement (allreduce)", [&] { impl_->gloo->allreduce(t, o)->wait(timeout_); });
  return t[0].item<int64_t>();
}

bool ProcessGroup::any(bool flag) {
  if (size() == 1) return flag;
  std::vector<at::Tensor> t{at::full({1}, flag ? 1.0 : 0.0, at::kFloat)};
  collective(where_, peers_, "agreement (allreduce)", [&] { impl_->gloo->allreduce(t)->wait(timeout_); });
  return t[0].item<float>() > 0;
}

}  // namespace levanter::distributed
