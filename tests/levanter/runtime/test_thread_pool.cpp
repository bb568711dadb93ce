// runtime/thread_pool.h: every index exactly once, the lowest failing chunk's exception, participant
// indices in range and stable, nesting and concurrent callers without deadlock, tasks through futures, and a
// destructor that runs what was submitted and joins.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "levanter/runtime/thread_pool.h"

using namespace levanter::runtime;

namespace {

ThreadPool::ForOptions with(size_t chunk, size_t max_participants = 0) {
  ThreadPool::ForOptions o;
  o.chunk = chunk;
  o.max_participants = max_participants;
  return o;
}

}  // namespace

TEST(ThreadPool, RunsEveryIndexExactlyOnce) {
  for (int workers : {0, 1, 2, 3, 7}) {
    ThreadPool pool(workers);
    EXPECT_EQ(pool.size(), workers);
    for (size_t n : {0, 1, 7, 64, 1000}) {
      for (size_t chunk : {1, 3, 64, 5000}) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallel_for(n, with(chunk), [&](size_t begin, size_t end, int) {
          ASSERT_LT(begin, end);
          ASSERT_LE(end, n);
          ASSERT_LE(end - begin, chunk);
          for (size_t i = begin; i < end; ++i) hits[i].fetch_add(1);
        });
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[i].load(), 1) << "workers " << workers << " n " << n << " chunk " << chunk << " index " << i;
        }
      }
    }
  }
}

TEST(ThreadPool, ParticipantIndicesAreInRangeUniquePerCallAndStable) {
  ThreadPool pool(3);
  std::map<int, std::thread::id> owner;  // participant index -> the thread that had it, across all calls
  for (int call = 0; call < 50; ++call) {
    std::mutex mu;
    std::map<int, std::set<std::thread::id>> seen;
    pool.parallel_for(400, with(1), [&](size_t, size_t, int participant) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));  // let the workers join in
      std::lock_guard<std::mutex> lock(mu);
      seen[participant].insert(std::this_thread::get_id());
    });
    for (const auto& [participant, threads] : seen) {
      ASSERT_GE(participant, 0);
      ASSERT_LE(participant, pool.size());
      ASSERT_EQ(threads.size(), 1u) << "participant " << participant << " was two threads in one call";
      const std::thread::id id = *threads.begin();
      if (participant == 0) {
        EXPECT_EQ(id, std::this_thread::get_id());  // the caller
      }
      auto [it, fresh] = owner.emplace(participant, id);
      EXPECT_EQ(it->second, id) << "participant " << participant << " changed threads between calls";
    }
  }
  EXPECT_GT(owner.size(), 1u) << "no worker ever helped";
}

TEST(ThreadPool, MaxParticipantsLimitsTheThreads) {
  ThreadPool pool(4);
  for (size_t max : {1, 2, 3}) {
    std::mutex mu;
    std::set<int> participants;
    pool.parallel_for(300, with(1, max), [&](size_t, size_t, int participant) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      std::lock_guard<std::mutex> lock(mu);
      participants.insert(participant);
    });
    EXPECT_LE(participants.size(), max);
    EXPECT_EQ(participants.count(0), 1u);
  }
}

TEST(ThreadPool, RethrowsTheLowestFailingChunksExceptionAfterTheChunksBeforeIt) {
  for (int workers : {0, 1, 3}) {
    ThreadPool pool(workers);
    for (int rep = 0; rep < 20; ++rep) {
      std::vector<std::atomic<int>> hits(1000);
      try {
        pool.parallel_for(1000, with(1), [&](size_t begin, size_t end, int) {
          for (size_t i = begin; i < end; ++i) {
            if (i == 370 || i == 371 || i == 800) throw std::runtime_error("index " + std::to_string(i));
            hits[i].fetch_add(1);
          }
        });
        FAIL() << "no exception";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "index 370") << "workers " << workers;
      }
      for (size_t i = 0; i < 370; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
      for (size_t i = 370; i < 1000; ++i) ASSERT_LE(hits[i].load(), 1) << i;
    }
    // The pool is still usable afterwards.
    std::atomic<int> count{0};
    pool.parallel_for(100, [&](size_t b, size_t e, int) { count += static_cast<int>(e - b); });
    EXPECT_EQ(count.load(), 100);
  }
}

TEST(ThreadPool, NestedCallsDoNotDeadlock) {
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(16 * 100);
  pool.parallel_for(16, [&](size_t ob, size_t oe, int) {
    for (size_t o = ob; o < oe; ++o) {
      pool.parallel_for(100, with(7), [&](size_t b, size_t e, int) {
        for (size_t i = b; i < e; ++i) hits[o * 100 + i].fetch_add(1);
      });
    }
  });
  for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i].load(), 1) << i;
}

TEST(ThreadPool, ConcurrentCallersShareThePool) {
  ThreadPool pool(2);
  std::vector<std::thread> callers;
  std::vector<int64_t> sums(4, 0);
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&, c] {
      for (int rep = 0; rep < 50; ++rep) {
        std::vector<int64_t> slot(1000, 0);
        pool.parallel_for(1000, with(16), [&](size_t b, size_t e, int) {
          for (size_t i = b; i < e; ++i) slot[i] = static_cast<int64_t>(i) * (c + 1);
        });
        int64_t s = 0;
        for (int64_t v : slot) s += v;  // reduced in index order: the same whoever computed what
        sums[c] += s;
      }
    });
  }
  for (auto& t : callers) t.join();
  for (int c = 0; c < 4; ++c) EXPECT_EQ(sums[c], 50 * 499500LL * (c + 1));
}

TEST(ThreadPool, ALoopFinishesWhileEveryWorkerIsBusy) {
  // The caller does all the work when no worker is free: it never waits for a worker to wake up.
  ThreadPool pool(1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::future<void> busy = pool.submit([released] { released.wait(); });
  std::atomic<int> count{0};
  std::set<int> participants;
  pool.parallel_for(1000, with(10), [&](size_t b, size_t e, int participant) {
    count += static_cast<int>(e - b);
    participants.insert(participant);  // only the caller runs: no lock needed
  });
  EXPECT_EQ(count.load(), 1000);
  EXPECT_EQ(participants, std::set<int>{0});
  release.set_value();
  busy.get();
}

TEST(ThreadPool, SubmitReturnsResultsAndExceptionsThroughFutures) {
  ThreadPool pool(2);
  std::future<int> answer = pool.submit([] { return 6 * 7; });
  std::future<std::thread::id> where = pool.submit([] { return std::this_thread::get_id(); });
  std::future<void> fails = pool.submit([] { throw std::runtime_error("task failed"); });
  EXPECT_EQ(answer.get(), 42);
  EXPECT_NE(where.get(), std::this_thread::get_id());
  EXPECT_THROW(
      {
        try {
          fails.get();
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "task failed");
          throw;
        }
      },
      std::runtime_error);
  ThreadPool none(0);
  EXPECT_THROW(none.submit([] {}), std::logic_error);
}

TEST(ThreadPool, DestructorRunsSubmittedTasksAndJoins) {
  std::atomic<int> ran{0};
  std::vector<std::future<void>> futures;
  {
    ThreadPool pool(2);
    for (int i = 0; i < 50; ++i) {
      futures.push_back(pool.submit([&ran] {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        ran.fetch_add(1);
      }));
    }
  }
  EXPECT_EQ(ran.load(), 50);
  for (auto& f : futures) EXPECT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
}

TEST(ThreadPool, ComputePoolHasOneParticipantPerHardwareThread) {
  EXPECT_EQ(compute_pool().size() + 1, hardware_threads());
  EXPECT_EQ(&compute_pool(), &compute_pool());
  std::atomic<int64_t> sum{0};
  compute_pool().parallel_for(10000, with(100), [&](size_t b, size_t e, int) {
    int64_t s = 0;
    for (size_t i = b; i < e; ++i) s += static_cast<int64_t>(i);
    sum += s;
  });
  EXPECT_EQ(sum.load(), 49995000);
}

TEST(ThreadPool, ThreadsThatCannotBeCreatedAreAnErrorNotATerminate) {
  // Before: a pool whose threads could not all be created destroyed the joinable ones: std::terminate ("terminate
  // called without an active exception"). In a child process whose address space leaves room for only a few
  // hundred 8 MB thread stacks.
  EXPECT_EXIT(
      {
        unsigned long long pages = 0;
        if (FILE* f = std::fopen("/proc/self/statm", "r")) {
          if (std::fscanf(f, "%llu", &pages) != 1) pages = 0;
          std::fclose(f);
        }
        rlimit lim{};
        getrlimit(RLIMIT_AS, &lim);
        lim.rlim_cur = pages * 4096ull + (1ull << 30);  // what is mapped now, plus 1 GB
        setrlimit(RLIMIT_AS, &lim);
        try {
          levanter::runtime::ThreadPool pool(100000);
        } catch (const std::runtime_error& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::_Exit(3);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(3), "cannot start worker thread [0-9]+ of 100000: .*; use fewer threads");
}
