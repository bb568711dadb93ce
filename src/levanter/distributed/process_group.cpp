#include "levanter/distributed/process_group.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <map>

namespace levanter::distributed {

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
};

namespace {

std::string where(const ProcessInfo& info) {
  return "rank " + std::to_string(info.rank) + " of " + std::to_string(info.world_size) + " (coordinator " +
         info.master_addr + ":" + std::to_string(info.master_port) + ")";
}

template <typename F>
auto collective(const ProcessInfo& info, const char* what, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    throw CollectiveError(
        std::string(what) + " failed on " + where(info) +
        ": another process died or did not arrive in time (trainer.distributed.timeout): " + e.what());
  }
}

}  // namespace

std::unique_ptr<ProcessGroup> ProcessGroup::connect(const ProcessInfo& info, std::chrono::seconds timeout) {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  pg->info_ = info;
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
    pg->impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("levanter", pg->impl_->store), info.rank, info.world_size, options);
  } catch (const std::exception& e) {
    throw CollectiveError("could not connect " + where(info) + " within " + std::to_string(timeout.count()) +
                          " s: " + e.what());
  }
  return pg;
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::sum_in_rank_order(std::vector<at::Tensor>& tensors, int64_t bucket_elements) {
  if (size() == 1 || tensors.empty()) return;
  const int64_t N = size();
  // One flat buffer per dtype and bucket; tensors in their given order.
  std::map<at::ScalarType, std::vector<size_t>> by_dtype;
  for (size_t i = 0; i < tensors.size(); ++i) by_dtype[tensors[i].scalar_type()].push_back(i);
  for (auto& [dtype, indices] : by_dtype) {
    size_t begin = 0;
    while (begin < indices.size()) {
      size_t end = begin;
      int64_t n = 0;
      while (end < indices.size() && (end == begin || n + tensors[indices[end]].numel() <= bucket_elements)) {
        n += tensors[indices[end]].numel();
        ++end;
      }
      const int64_t chunk = (n + N - 1) / N;
      at::Tensor flat = at::zeros({chunk * N}, at::TensorOptions().dtype(dtype));
      int64_t at_ = 0;
      for (size_t j = begin; j < end; ++j) {
        const at::Tensor& t = tensors[indices[j]];
        flat.narrow(0, at_, t.numel()).copy_(t.reshape({-1}));
        at_ += t.numel();
      }
      // Rank r receives chunk r of every rank (in rank order), adds them in rank order, and all gather the sums.
      at::Tensor received = at::empty({chunk * N}, flat.options());
      std::vector<int64_t> equal;
      collective(info_, "gradient exchange (alltoall)",
                 [&] { impl_->gloo->alltoall_base(received, flat, equal, equal)->wait(timeout_); });
      at::Tensor mine = received.narrow(0, 0, chunk).clone();
      for (int64_t r = 1; r < N; ++r) mine.add_(received.narrow(0, r * chunk, chunk));
      std::vector<std::vector<at::Tensor>> out(1);
      for (int64_t r = 0; r < N; ++r) out[0].push_back(flat.narrow(0, r * chunk, chunk));
      std::vector<at::Tensor> in{mine};
      collective(info_, "gradient exchange (allgather)", [&] { impl_->gloo->allgather(out, in)->wait(timeout_); });
      at_ = 0;
      for (size_t j = begin; j < end; ++j) {
        at::Tensor& t = tensors[indices[j]];
        t.copy_(flat.narrow(0, at_, t.numel()).view(t.sizes()));
        at_ += t.numel();
      }
      begin = end;
    }
  }
}

bool ProcessGroup::any(bool flag) {
  if (size() == 1) return flag;
  std::vector<at::Tensor> t{at::full({1}, flag ? 1.0 : 0.0, at::kFloat)};
  collective(info_, "agreement (allreduce)", [&] { impl_->gloo->allreduce(t)->wait(timeout_); });
  return t[0].item<float>() > 0;
}

}  // namespace levanter::distributed
