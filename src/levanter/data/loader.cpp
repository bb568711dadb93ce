#include "levanter/data/loader.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

namespace levanter::data {

TokenBatch batch_at(SequenceDataset& dataset, int64_t batch_size, int64_t step) {
  if (batch_size <= 0) throw std::invalid_argument("batch_size must be positive, got " + std::to_string(batch_size));
  if (step < 0) throw std::invalid_argument("step must be non-negative, got " + std::to_string(step));
  TokenBatch b;
  b.step = step;
  b.batch_size = batch_size;
  b.seq_len = dataset.seq_len();
  b.tokens.resize(static_cast<size_t>(batch_size * b.seq_len));
  std::vector<int64_t> indices(static_cast<size_t>(batch_size));
  std::iota(indices.begin(), indices.end(), step * batch_size);
  dataset.read_batch(indices.data(), batch_size, b.tokens.data());
  return b;
}

// --- DataLoader ----------------------------------------------------------------------------------------------

DataLoader::DataLoader(std::shared_ptr<SequenceDataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options), next_step_(options.start_step), next_to_claim_(options.start_step) {
  if (options_.batch_size <= 0) throw std::invalid_argument("DataLoader: batch_size must be positive");
  if (options_.start_step < 0) throw std::invalid_argument("DataLoader: start_step must be non-negative");
  options_.prefetch = std::max(1, options_.prefetch);
  options_.num_workers = std::max(1, options_.num_workers);
  for (int i = 0; i < options_.num_workers; ++i) threads_.emplace_back([this] { worker(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void DataLoader::worker() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // Claim the next step once the queue has room for it.
    cv_.wait(lock, [&] { return stop_ || next_to_claim_ < next_step_ + options_.prefetch; });
    if (stop_) return;
    int64_t step = next_to_claim_++;
    slots_.push_back(Slot{step});
    lock.unlock();
    TokenBatch batch;
    std::exception_ptr error;
    try {
      batch = batch_at(*dataset_, options_.batch_size, step);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    // The slot is still queued: next() only pops ready slots at the front.
    Slot& slot = slots_[static_cast<size_t>(step - next_step_)];
    slot.batch = std::move(batch);
    slot.error = error;
    slot.ready = true;
    cv_.notify_all();
  }
}

TokenBatch DataLoader::next() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !slots_.empty() && slots_.front().ready; });
  Slot slot = std::move(slots_.front());
  slots_.pop_front();
  ++next_step_;
  lock.unlock();
  cv_.notify_all();
  if (slot.error) std::rethrow_exception(slot.error);
  return std::move(slot.batch);
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
  dataset_->read_batch(indices.data(), b.batch_size, b.tokens.data());
  return b;
}

bool EvalBatches::next(TokenBatch& out) {
  if (cursor_ >= num_batches_) return false;
  out = batch(cursor_++);
  return true;
}

}  // namespace levanter::data
