#include "levanter/data/loader.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "levanter/data/files.h"  // DataError

namespace levanter::data {

TokenBatch batch_at(SequenceDataset& dataset, int64_t batch_size, int64_t step, int64_t row_begin, int64_t row_count) {
  if (batch_size <= 0) throw std::invalid_argument("batch_size must be positive, got " + std::to_string(batch_size));
  if (step < 0) throw std::invalid_argument("step must be non-negative, got " + std::to_string(step));
  if (row_count < 0) row_count = batch_size - row_begin;
  if (row_begin < 0 || row_count <= 0 || row_begin + row_count > batch_size) {
    throw std::invalid_argument("rows [" + std::to_string(row_begin) + ", " + std::to_string(row_begin + row_count) +
                                ") are not within a batch of " + std::to_string(batch_size));
  }
  TokenBatch b;
  b.step = step;
  b.batch_size = row_count;
  b.seq_len = dataset.seq_len();
  b.tokens.resize(static_cast<size_t>(row_count * b.seq_len));
  std::vector<int64_t> indices(static_cast<size_t>(row_count));
  std::iota(indices.begin(), indices.end(), step * batch_size + row_begin);
  try {
    dataset.read_batch(indices.data(), row_count, b.tokens.data());
  } catch (const DataError& e) {
    throw DataError("the batch of step " + std::to_string(step) + ": " + e.what());
  }
  return b;
}

// --- DataLoader ----------------------------------------------------------------------------------------------

// `prefetch` batches are always queued or being assembled: next() takes the oldest and queues one more.
// The pool's workers assemble them in parallel; the futures hand them out in step order.
DataLoader::DataLoader(std::shared_ptr<SequenceDataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)),
      options_(options),
      next_step_(options.start_step),
      pool_(std::max(1, options.num_workers)) {
  if (options_.batch_size <= 0) throw std::invalid_argument("DataLoader: batch_size must be positive");
  if (options_.start_step < 0) throw std::invalid_argument("DataLoader: start_step must be non-negative");
  options_.prefetch = std::max(1, options_.prefetch);
  for (int i = 0; i < options_.prefetch; ++i) prefetch(next_step_ + i);
}

DataLoader::~DataLoader() {
  stop_ = true;  // the pool's destructor (first member to go) still runs the queued tasks: they return at once
}

void DataLoader::prefetch(int64_t step) {
  pending_.push_back(pool_.submit([this, step] {
    if (stop_.load(std::memory_order_relaxed)) return TokenBatch();
    return batch_at(*dataset_, options_.batch_size, step, options_.row_begin, options_.row_count);
  }));
}

TokenBatch DataLoader::next() {
  std::future<TokenBatch> f = std::move(pending_.front());
  pending_.pop_front();
  prefetch(next_step_ + static_cast<int64_t>(pending_.size()) + 1);
  ++next_step_;
  return f.get();  // rethrows an error from assembling this batch
}

// --- EvalBatches ---------------------------------------------------------------------------------------------

EvalBatches::EvalBatches(std::shared_ptr<SequenceDataset> dataset, int64_t batch_size, int64_t max_batches)
    : dataset_(std::move(dataset)), batch_size_(batch_size) {
  if (batch_size <= 0) throw std::invalid_argument("EvalBatches: batch_size must be positive");
  std::optional<int64_t> n = dataset_->length();
  if (!n) throw std::invalid_argument("EvalBatches: the dataset is infinite; evaluate an unshuffled finite dataset");
  num_sequences_ = *n;
  num_batches_ = (num_sequences_ + batch_size - 1) / batch_size;
  if (max_batches > 0 && num_batches_ > max_batches) {
    num_batches_ = max_batches;
    num_sequences_ = max_batches * batch_size;
  }
}

TokenBatch EvalBatches::batch(int64_t i) {
  if (i < 0 || i >= num_batches_) {
    throw std::out_of_range("EvalBatches: batch " + std::to_string(i) + " of " + std::to_string(num_batches_));
  }
  TokenBatch b;
  b.step = i;
  b.seq_len = dataset_->seq_len();
  b.batch_size = std::min(batch_size_, num_sequences_ - i * batch_size_);
  b.tokens.resize(static_cast<size_t>(b.batch_size * b.seq_len));
  std::vector<int64_t> indices(static_cast<size_t>(b.batch_size));
  std::iota(indices.begin(), indices.end(), i * batch_size_);
  try {
    dataset_->read_batch(indices.data(), b.batch_size, b.tokens.data());
  } catch (const DataError& e) {
    throw DataError("evaluation batch " + std::to_string(i) + ": " + e.what());
  }
  return b;
}

bool EvalBatches::next(TokenBatch& out) {
  if (cursor_ >= num_batches_) return false;
  out = batch(cursor_++);
  return true;
}

}  // namespace levanter::data
