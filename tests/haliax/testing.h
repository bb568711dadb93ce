// Test helpers: compare a named computation with the same computation written in positional ATen,
// value and gradient, in double precision with fixed tolerances.
#pragma once

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "haliax/haliax.h"

namespace haliax::testing {

using TensorFn = std::function<at::Tensor(const std::vector<at::Tensor>&)>;

// Deterministic double-precision test data (ATen's CPU generator seeded locally, never the global one).
inline at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  at::Tensor t = at::empty(shape, at::kDouble);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return t.normal_(0.0, 1.0, gen);
}

inline at::Tensor rand_int(at::IntArrayRef shape, int64_t hi, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(hi, shape, gen, at::kLong);
}

// Runs `named` and `reference` on fresh leaf copies of `inputs` (those that are floating point get gradients),
// checks the outputs agree to `tol`, then back-propagates the same random cotangent through both and checks
// every input gradient agrees to `tol`.
inline void expect_same_value_and_grad(const std::vector<at::Tensor>& inputs, const TensorFn& named,
                                       const TensorFn& reference, double tol = 1e-10, bool check_grad = true) {
  auto leaves = [&] {
    std::vector<at::Tensor> out;
    for (const at::Tensor& t : inputs) {
      at::Tensor c = t.detach().clone();
      if (at::isFloatingType(c.scalar_type())) c.requires_grad_(true);
      out.push_back(c);
    }
    return out;
  };
  std::vector<at::Tensor> a = leaves(), b = leaves();
  at::Tensor ya = named(a), yb = reference(b);
  ASSERT_EQ(ya.sizes(), yb.sizes()) << "output shapes differ";
  ASSERT_EQ(ya.scalar_type(), yb.scalar_type()) << "output dtypes differ";
  if (at::isFloatingType(ya.scalar_type())) {
    EXPECT_TRUE(at::allclose(ya, yb, tol, tol))
        << "values differ, max abs diff " << (ya - yb).abs().max().item<double>();
  } else {
    EXPECT_TRUE(at::equal(ya, yb)) << "values differ";
  }
  if (!check_grad || !ya.requires_grad()) return;
  at::Tensor cot = randn(ya.sizes(), 1234).to(ya.scalar_type());
  (ya * cot).sum().backward();
  (yb * cot).sum().backward();
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].requires_grad()) continue;
    at::Tensor ga = a[i].grad(), gb = b[i].grad();
    if (!ga.defined() && !gb.defined()) continue;
    if (!ga.defined()) ga = at::zeros_like(a[i]);
    if (!gb.defined()) gb = at::zeros_like(b[i]);
    EXPECT_TRUE(at::allclose(ga, gb, tol, tol))
        << "gradient of input " << i << " differs, max abs diff " << (ga - gb).abs().max().item<double>();
  }
}

// EXPECT that `stmt` throws haliax::ValueError whose message contains `substr`.
#define EXPECT_VALUE_ERROR(stmt, substr)                                \
  do {                                                                  \
    try {                                                               \
      stmt;                                                             \
      ADD_FAILURE() << "expected ValueError containing: " << (substr);  \
    } catch (const ::haliax::ValueError& e) {                           \
      EXPECT_THAT(std::string(e.what()), ::testing::HasSubstr(substr)); \
    }                                                                   \
  } while (0)

// Tensor parallelism's all-reduce between two threads standing in for two processes: each thread's tensor becomes
// (t0 + t1), thread 0's first, on both (what a process group's sum_in_rank_order gives two processes).
class SumOfTwoThreads {
 public:
  void operator()(int rank, at::Tensor& t) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return left_ == 0; });  // the previous exchange has been read by both
    in_[rank] = t.clone();
    if (++arrived_ == 2) {
      sum_ = in_[0] + in_[1];
      arrived_ = 0;
      left_ = 2;
      ++round_;
      cv_.notify_all();
    } else {
      const int64_t r = round_;
      cv_.wait(lock, [&] { return round_ != r; });
    }
    t.copy_(sum_);
    ++exchanges_[rank];
    if (--left_ == 0) cv_.notify_all();
  }
  // An all-gather made of the sum: block `rank` of `whole` along dim 0 <- `piece`, the other blocks zero, summed.
  void gather(int rank, const at::Tensor& piece, at::Tensor& whole) {
    whole.zero_();
    whole.narrow(0, rank * piece.size(0), piece.size(0)).copy_(piece);
    (*this)(rank, whole);
  }
  // How many exchanges thread `rank` took part in.
  int64_t exchanges(int rank) const { return exchanges_[rank]; }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  at::Tensor in_[2], sum_;
  int arrived_ = 0, left_ = 0;
  int64_t round_ = 0, exchanges_[2] = {0, 0};
};

}  // namespace haliax::testing
