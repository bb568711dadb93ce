// Batches of token sequences for training and evaluation. No libtorch here: the trainer turns a TokenBatch
// into a tensor (torch::from_blob(batch.tokens.data(), {batch.batch_size, batch.seq_len}, torch::kInt32)).
//
// Training: the batch for step s is sequences [s*B, (s+1)*B) of an (infinite, shuffled or mixed) dataset,
// a pure function of (seed, step). DataLoader prefetches the next batches on worker threads (a pool of its
// own: assembling a batch may wait for the cache build) into a bounded queue and hands them out in step
// order, starting at any step: resuming needs only the step.
//
//   LoaderOptions opts;
//   opts.batch_size = 8;
//   opts.start_step = resumed_step;
//   DataLoader loader(train_set, opts);
//   for (int64_t step = resumed_step; step < num_steps; ++step) {
//     TokenBatch b = loader.next();            // b.step == step
//     ...
//   }
//
// Evaluation: EvalBatches reads a finite dataset sequentially (unshuffled) in batches of B, at most
// `max_batches` of them. The last batch may be partial: it has its true size (batch_size < B) and is not
// padded, so that every token counts once.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <vector>

#include "levanter/data/dataset.h"
#include "levanter/runtime/thread_pool.h"

namespace levanter::data {

struct TokenBatch {
  int64_t step = 0;        // training step (or eval batch number)
  int64_t batch_size = 0;  // rows present
  int64_t seq_len = 0;
  std::vector<int32_t> tokens;  // batch_size * seq_len, row-major
  const int32_t* row(int64_t i) const { return tokens.data() + i * seq_len; }
};

// The batch of `step` (sequences [step*B, (step+1)*B)), read synchronously; or only its rows
// [row_begin, row_begin + row_count) (one process's part of a global batch), row_count -1: to the end.
TokenBatch batch_at(SequenceDataset& dataset, int64_t batch_size, int64_t step, int64_t row_begin = 0,
                    int64_t row_count = -1);

struct LoaderOptions {
  int64_t batch_size = 0;
  int64_t start_step = 0;
  int prefetch = 4;     // batches assembled ahead of the consumer
  int num_workers = 1;  // threads assembling batches (in parallel, delivered in order)
  // The rows of each global batch of batch_size sequences that this process reads (data parallelism: process r of
  // N reads [r*B/N, (r+1)*B/N)); row_count -1: all.
  int64_t row_begin = 0;
  int64_t row_count = -1;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<SequenceDataset> dataset, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch in step order; rethrows an error from assembling it (e.g. the end of a finite dataset).
  TokenBatch next();
  int64_t next_step() const { return next_step_; }

 private:
  void prefetch(int64_t step);

  std::shared_ptr<SequenceDataset> dataset_;
  LoaderOptions options_;
  std::deque<std::future<TokenBatch>> pending_;  // steps next_step_ .. next_step_ + pending_.size() - 1
  int64_t next_step_;                            // the step next() returns
  std::atomic<bool> stop_{false};                // queued batches are skipped once the loader goes away
  runtime::ThreadPool pool_;                     // last: joined before the members its tasks use go away
};

// Sequential batches over a finite dataset, for evaluation.
class EvalBatches {
 public:
  // max_batches <= 0: all of the dataset. Waits for the dataset's final length.
  EvalBatches(std::shared_ptr<SequenceDataset> dataset, int64_t batch_size, int64_t max_batches = 0);
  int64_t num_batches() const { return num_batches_; }
  int64_t num_sequences() const { return num_sequences_; }
  // Batch i (0 <= i < num_batches()); the last may be partial.
  TokenBatch batch(int64_t i);
  // Iteration: false after the last batch.
  bool next(TokenBatch& out);

 private:
  std::shared_ptr<SequenceDataset> dataset_;
  int64_t batch_size_, num_batches_, num_sequences_;
  int64_t cursor_ = 0;
};

}  // namespace levanter::data
