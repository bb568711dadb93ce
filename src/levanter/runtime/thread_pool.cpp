#include "levanter/runtime/thread_pool.h"

#include <system_error>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>

namespace levanter::runtime {

// One parallel_for call. Shared (shared_ptr) with the workers that help: the caller returns once every
// index is done, and a worker that found the job a moment earlier may still hold it. Such a worker only
// touches the atomics (its claim fails), never fn, which lives in the caller's frame.
struct ThreadPool::Job {
  const RangeFn* fn = nullptr;
  size_t n = 0, chunk = 1, max_helpers = 0;
  size_t helpers = 0;           // workers that took the job; guarded by the pool's mu_
  std::atomic<size_t> next{0};  // the next unclaimed index (n or more: nothing left)
  std::atomic<size_t> done{0};  // indices finished or abandoned after an error
  std::mutex m;
  std::condition_variable finished;
  std::exception_ptr error;  // of the lowest failing chunk; guarded by m
  size_t error_begin = SIZE_MAX;
};

ThreadPool::ThreadPool(int num_workers) {
  workers_.reserve(static_cast<size_t>(std::max(0, num_workers)));
  // A thread that cannot be created (too many threads, too little address space for their stacks): stop and join
  // the ones already running and say so, instead of destroying joinable threads (std::terminate, "terminate called
  // without an active exception").
  for (int k = 0; k < num_workers; ++k) {
    try {
      workers_.emplace_back([this, k] { worker_loop(k + 1); });
    } catch (const std::system_error& e) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
      }
      wake_.notify_all();
      for (std::thread& t : workers_) t.join();
      throw std::runtime_error("cannot start worker thread " + std::to_string(k + 1) + " of " +
                               std::to_string(num_workers) + ": " + e.what() + "; use fewer threads");
    }
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::enqueue(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (workers_.empty()) throw std::logic_error("ThreadPool::submit: this pool has no worker threads to run the task");
    if (stop_) throw std::logic_error("ThreadPool::submit: the pool is shutting down");
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
}

std::shared_ptr<ThreadPool::Job> ThreadPool::claimable_job_locked() {
  for (const std::shared_ptr<Job>& job : jobs_) {
    if (job->helpers < job->max_helpers && job->next.load(std::memory_order_relaxed) < job->n) return job;
  }
  return nullptr;
}

void ThreadPool::worker_loop(int participant) {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (std::shared_ptr<Job> job = claimable_job_locked()) {
      ++job->helpers;
      lock.unlock();
      drain(*job, participant);
      job.reset();
      lock.lock();
      continue;
    }
    if (!tasks_.empty()) {
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();  // a packaged_task: its exception goes to its future
      task = nullptr;
      lock.lock();
      continue;
    }
    if (stop_) return;
    wake_.wait(lock);
  }
}

void ThreadPool::drain(Job& job, int participant) {
  while (true) {
    const size_t begin = job.next.fetch_add(job.chunk, std::memory_order_relaxed);
    if (begin >= job.n) return;
    const size_t end = std::min(job.n, begin + job.chunk);
    size_t finished = end - begin;
    try {
      (*job.fn)(begin, end, participant);  // valid: the caller waits until this chunk is counted in `done`
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(job.m);
        if (begin < job.error_begin) {
          job.error = std::current_exception();
          job.error_begin = begin;
        }
      }
      // Claim nothing more. Every chunk below this one is claimed already, so the lowest failing chunk is
      // among those that run: the error reported does not depend on timing.
      const size_t claimed = job.next.exchange(job.n);
      if (claimed < job.n) finished += job.n - claimed;
    }
    if (job.done.fetch_add(finished, std::memory_order_acq_rel) + finished == job.n) {
      std::lock_guard<std::mutex> lock(job.m);
      job.finished.notify_all();
    }
  }
}

void ThreadPool::parallel_for(size_t n, ForOptions options, const RangeFn& fn) {
  if (n == 0) return;
  const size_t chunk = std::max<size_t>(1, options.chunk);
  size_t helpers = workers_.size();
  if (options.max_participants > 0) helpers = std::min(helpers, options.max_participants - 1);
  if (helpers == 0 || n <= chunk) {
    for (size_t begin = 0; begin < n; begin += chunk) fn(begin, std::min(n, begin + chunk), 0);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->chunk = chunk;
  job->max_helpers = helpers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(job);
  }
  wake_.notify_all();
  drain(*job, 0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.erase(std::find(jobs_.begin(), jobs_.end(), job));
  }
  if (job->done.load(std::memory_order_acquire) != n) {
    std::unique_lock<std::mutex> lock(job->m);
    job->finished.wait(lock, [&] { return job->done.load(std::memory_order_acquire) == n; });
  }
  std::lock_guard<std::mutex> lock(job->m);
  if (job->error) std::rethrow_exception(job->error);
}

int hardware_threads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

ThreadPool& compute_pool() {
  // Never destroyed: objects destroyed at exit (a tokenizer in a static) may still use it, and its idle
  // workers need no cleanup.
  static ThreadPool* pool = new ThreadPool(hardware_threads() - 1);
  return *pool;
}

}  // namespace levanter::runtime
