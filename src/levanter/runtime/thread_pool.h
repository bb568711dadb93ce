// The one thread pool: persistent worker threads for data-parallel loops (parallel_for) and for longer
// tasks (submit).
//
//   ThreadPool& pool = compute_pool();                    // process-wide, one participant per core
//   pool.parallel_for(n, {/*chunk=*/8}, [&](size_t begin, size_t end, int participant) { ... });
//   std::future<Batch> f = loader_pool.submit([&] { return make_batch(step); });
//
// parallel_for: the caller works too. Indices are claimed `chunk` at a time from an atomic counter, so a
// participant that the OS preempts holds up no one, and the call returns as soon as every index is done
// (a worker that wakes late finds nothing left; nobody waits for it). Threads are never started per call.
// Each participant has an index: 0 is the calling thread, 1..size() are the pool's workers (worker k is
// always k + 1), so a caller can keep warm per-participant state (the tokenizer keeps one word cache per
// worker). Indices are unique within a call; two calls running at once from two threads both have a
// participant 0, so state kept for index 0 belongs in the caller's frame.
//
// Determinism: the pool decides only *who* runs an index, never what is computed. Results must not depend
// on the participant (write to per-index slots and reduce in index order afterwards, as AdamW's norms do).
// If indices throw, parallel_for stops claiming and rethrows the exception of the lowest failing chunk
// (chunks before it all ran), so the error a caller sees does not depend on timing either.
//
// Nesting: a parallel_for body may call parallel_for (on this pool or another); the inner caller works on
// its own loop and waits only for chunks that are already running, so nesting cannot deadlock. Workers
// help any loop that has unclaimed work, whoever started it.
//
// submit: FIFO tasks for the workers, for work that lives longer (a cache build's per-shard loop, a data
// loader's batches). Workers prefer helping a parallel_for over starting a task. A task must not wait for
// a later task of the same pool (all workers may be busy with tasks that wait): give such work its own
// pool. The destructor runs every submitted task, then joins the workers.
//
// No libtorch here (data/ uses this). ATen's own intra-op threads are separate; see compute_pool().
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace levanter::runtime {

class ThreadPool {
 public:
  // Runs fn(begin, end, participant) for consecutive ranges covering [0, n).
  using RangeFn = std::function<void(size_t begin, size_t end, int participant)>;
  struct ForOptions {
    size_t chunk = 1;             // indices claimed at a time
    size_t max_participants = 0;  // the caller and at most max_participants - 1 workers; 0: every worker
  };

  // `num_workers` threads, started now (0: parallel_for runs on the caller alone; submit() is refused).
  explicit ThreadPool(int num_workers);
  ~ThreadPool();  // runs the tasks already submitted, then joins; no parallel_for may be running
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()); }  // workers, not counting callers

  void parallel_for(size_t n, ForOptions options, const RangeFn& fn);
  void parallel_for(size_t n, const RangeFn& fn) { parallel_for(n, ForOptions(), fn); }

  // Runs fn() on a worker; its result (or exception) comes through the future.
  template <typename F>
  std::future<std::invoke_result_t<std::decay_t<F>>> submit(F&& fn) {
    using R = std::invoke_result_t<std::decay_t<F>>;
    auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(fn));
    std::future<R> result = task->get_future();
    enqueue([task] { (*task)(); });
    return result;
  }

 private:
  struct Job;
  void enqueue(std::function<void()> task);
  void worker_loop(int participant);
  static void drain(Job& job, int participant);
  std::shared_ptr<Job> claimable_job_locked();

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::shared_ptr<Job>> jobs_;  // parallel_for loops that may have unclaimed indices
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Threads the hardware runs at once (at least 1).
int hardware_threads();

// The process-wide pool for compute (AdamW's update, batch tokenization): hardware_threads() - 1 workers,
// so that with its caller one loop uses every core. Started on first use. Its workers sleep on a condition
// variable when idle (they never spin, so they take no time from ATen's or OpenBLAS's threads).
ThreadPool& compute_pool();

}  // namespace levanter::runtime
