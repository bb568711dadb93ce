#include "testing.h"

using namespace haliax;
using haliax::testing::expect_same_value_and_grad;
using haliax::testing::rand_int;
using haliax::testing::randn;

namespace {
const Axis B("batch", 2), P("pos", 3), E("embed", 4), H("head", 5);
}

TEST(Core, Creation) {
  EXPECT_TRUE(at::equal(zeros({B, P}).array(), at::zeros({2, 3})));
  EXPECT_TRUE(at::equal(ones({B}, at::kDouble).array(), at::ones({2}, at::kDouble)));
  EXPECT_TRUE(at::equal(full({P}, 7, at::kLong).array(), at::full({3}, 7, at::kLong)));
  EXPECT_TRUE(at::equal(arange(E, 2, 3).array(), at::arange(2, 14, 3, at::kLong)));
  EXPECT_EQ(arange(E).axes(), (AxisSpec{E}));
  EXPECT_TRUE(at::allclose(linspace(E, 0, 1).array(), at::linspace(0, 1, 4)));
  NamedArray x(randn({2, 3}, 1), {B, P});
  EXPECT_EQ(zeros_like(x).dtype(), at::kDouble);
  EXPECT_TRUE(at::equal(full_like(x, 2.5).array(), at::full({2, 3}, 2.5, at::kDouble)));
  EXPECT_EQ(astype(x, at::kBFloat16).dtype(), at::kBFloat16);
}

TEST(Core, RenameKeepsDataAndChecksSizes) {
  NamedArray x(randn({2, 3}, 1), {B, P});
  NamedArray r = rename(x, {{"pos", "key_position"}});
  EXPECT_EQ(r.axes(), (AxisSpec{B, Axis("key_position", 3)}));
  EXPECT_TRUE(r.array().is_same(x.array()));
  EXPECT_EQ(rename(x, {{B, Axis("b2", 2)}}).axes()[0], Axis("b2", 2));
  EXPECT_VALUE_ERROR(rename(x, {{B, Axis("b2", 9)}}), "Cannot rename axis batch=2 to b2=9: size mismatch");
  EXPECT_VALUE_ERROR(rename(x, {{"batch", "pos"}}), "Axes must be unique");
}

TEST(Core, RearrangeSequenceForm) {
  at::Tensor t = randn({2, 3, 4, 5}, 2);
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        return rearrange(NamedArray(v[0], {B, P, E, H}), {"head", kEllipsis, "batch"}).array();
      },
      [](const auto& v) {
        return v[0].permute({3, 1, 2, 0});
      });
  NamedArray x(t, {B, P, E, H});
  EXPECT_EQ(rearrange(x, {E, B, H, P}).axes(), (AxisSpec{E, B, H, P}));
  EXPECT_VALUE_ERROR(rearrange(x, {"batch", "pos"}), "Partial order must be a permutation of the axes");
}

TEST(Core, FlattenAndUnflatten) {
  at::Tensor t = randn({2, 3, 4}, 3);
  // Flatten non-adjacent axes: they move together to the first one's position.
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        NamedArray f = flatten_axes(NamedArray(v[0], {B, P, E}), {"batch", "embed"}, "be");
        EXPECT_EQ(f.axes(), (AxisSpec{Axis("be", 8), P}));
        return f.array();
      },
      [](const auto& v) {
        return v[0].permute({0, 2, 1}).reshape({8, 3});
      });
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        NamedArray u = unflatten_axis(NamedArray(v[0], {B, P, E}), "embed", {Axis("x", 2), Axis("y", 2)});
        EXPECT_EQ(u.axes(), (AxisSpec{B, P, Axis("x", 2), Axis("y", 2)}));
        return u.array();
      },
      [](const auto& v) {
        return v[0].reshape({2, 3, 2, 2});
      });
  NamedArray x(t, {B, P, E});
  EXPECT_EQ(flatten(x, "all").axes(), (AxisSpec{Axis("all", 24)}));
  EXPECT_VALUE_ERROR(flatten_axes(x, {"batch", "pos"}, Axis("bp", 5)), "Cannot merge");
  EXPECT_VALUE_ERROR(unflatten_axis(x, "embed", {Axis("x", 3)}), "Cannot split");
}

TEST(Core, SplitConcatenateStackUnbind) {
  at::Tensor t = randn({2, 5}, 4);
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        auto parts = split(NamedArray(v[0], {B, H}), "head", {Axis("a", 2), Axis("b", 3)});
        EXPECT_EQ(parts[1].axes(), (AxisSpec{B, Axis("b", 3)}));
        return at::cat({parts[0].array() * 2, parts[1].array()}, 1);
      },
      [](const auto& v) {
        auto p = v[0].split_with_sizes({2, 3}, 1);
        return at::cat({p[0] * 2, p[1]}, 1);
      });
  at::Tensor u = randn({3, 2}, 5), w = randn({2, 4}, 6);
  expect_same_value_and_grad(
      {u, w},
      [](const auto& v) {
        // The second array has its axes in another order; concatenate rearranges it to the first's.
        NamedArray c = concatenate("pos", {NamedArray(v[0], {P, B}), NamedArray(v[1], {B, Axis("pos", 4)})});
        EXPECT_EQ(c.axes(), (AxisSpec{Axis("pos", 7), B}));
        return c.array();
      },
      [](const auto& v) {
        return at::cat({v[0], v[1].t()}, 0);
      });
  NamedArray a(randn({2, 3}, 7), {B, P}), b(randn({3, 2}, 8), {P, B});
  NamedArray s = stack("layer", {a, b});
  EXPECT_EQ(s.axes(), (AxisSpec{Axis("layer", 2), B, P}));
  EXPECT_TRUE(at::equal(s.array()[1], b.array().t()));
  auto parts = unbind(s, "pos");
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].axes(), (AxisSpec{Axis("layer", 2), B}));
  EXPECT_TRUE(at::equal(parts[2].array(), s.array().select(2, 2)));
  EXPECT_VALUE_ERROR(split(a, "pos", {Axis("x", 1)}), "does not match the length of the axis");
  EXPECT_VALUE_ERROR(concatenate(Axis("pos", 9), {a, a}), "Cannot concatenate arrays along axis pos of size 9");
}

TEST(Core, SliceWithStaticAndRuntimeStart) {
  at::Tensor t = randn({2, 5}, 9);
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        return slice(NamedArray(v[0], {B, H}), "head", 1, 3).array();
      },
      [](const auto& v) { return v[0].narrow(1, 1, 3); });
  expect_same_value_and_grad(
      {t},
      [](const auto& v) {
        NamedArray start(at::scalar_tensor(2, at::kLong), {});
        NamedArray s = slice(NamedArray(v[0], {B, H}), "head", start, 2);
        EXPECT_EQ(s.axes(), (AxisSpec{B, Axis("head", 2)}));
        return s.array();
      },
      [](const auto& v) { return v[0].narrow(1, 2, 2); });
  NamedArray x(t, {B, H});
  EXPECT_EQ(slice(x, "head", 0, Axis("sub", 2)).axes(), (AxisSpec{B, Axis("sub", 2)}));
  EXPECT_VALUE_ERROR(slice(x, "head", 4, 3), "slice 4:4 + 3 is out of bounds for axis head of length 5");
  // A runtime start is clamped so the slice stays in bounds (jax.lax.dynamic_slice).
  NamedArray late(at::scalar_tensor(4, at::kLong), {});
  EXPECT_TRUE(at::equal(slice(x, "head", late, 3).array(), t.narrow(1, 2, 3)));
}

TEST(Core, TakeByIntegerAndByNamedIndex) {
  at::Tensor t = randn({2, 5, 4}, 10);
  at::Tensor idx = rand_int({3, 6}, 5, 11);
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        // The index's axes (q, r) take the place of head.
        NamedArray out = take(NamedArray(v[0], {B, H, E}), "head", NamedArray(idx, {Axis("q", 3), Axis("r", 6)}));
        EXPECT_EQ(out.axes(), (AxisSpec{B, Axis("q", 3), Axis("r", 6), E}));
        return out.array();
      },
      [&](const auto& v) {
        return v[0].index_select(1, idx.reshape(-1)).reshape({2, 3, 6, 4});
      });
  // An index sharing the batch axis gathers per batch element (take_along_axis).
  at::Tensor bidx = rand_int({2, 7}, 5, 12);
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        NamedArray out = take(NamedArray(v[0], {B, H, E}), "head", NamedArray(bidx, {B, Axis("k", 7)}));
        // As in Haliax, the index's own axes come first when it shares axes with the array.
        EXPECT_EQ(out.axes(), (AxisSpec{Axis("k", 7), B, E}));
        return out.array();
      },
      [&](const auto& v) {
        return at::gather(v[0], 1, bidx.unsqueeze(-1).expand({2, 7, 4})).transpose(0, 1);
      });
  NamedArray x(t, {B, H, E});
  EXPECT_TRUE(at::equal(take(x, "head", 3).array(), t.select(1, 3)));
  EXPECT_VALUE_ERROR(take(x, "head", 5), "out of bounds");
  EXPECT_VALUE_ERROR(take(x, "head", NamedArray(at::zeros({2}), {B})), "Index must be an integer array");
  EXPECT_VALUE_ERROR(take(x, "vocab", 0), "axis vocab not found");
}

TEST(Core, UpdatedSlice) {
  at::Tensor t = randn({2, 6}, 13), u = randn({3, 2}, 14);
  expect_same_value_and_grad(
      {t, u},
      [](const auto& v) {
        Axis S("pos", 3);
        return updated_slice(NamedArray(v[0], {B, Axis("pos", 6)}), {{"pos", int64_t(2)}}, NamedArray(v[1], {S, B}))
            .array();
      },
      [](const auto& v) {
        at::Tensor out = v[0].clone();
        out.narrow(1, 2, 3).copy_(v[1].t());
        return out;
      });
  NamedArray x(t, {B, Axis("pos", 6)});
  NamedArray start(at::scalar_tensor(1, at::kLong), {});
  NamedArray r = updated_slice(x, {{"pos", start}}, NamedArray(at::zeros({2, 2}, at::kDouble), {B, Axis("pos", 2)}));
  EXPECT_TRUE(at::equal(r.array().narrow(1, 1, 2), at::zeros({2, 2}, at::kDouble)));
  EXPECT_TRUE(at::equal(r.array().narrow(1, 3, 3), t.narrow(1, 3, 3)));
  EXPECT_VALUE_ERROR(updated_slice(x, {{"pos", int64_t(5)}}, NamedArray(at::zeros({2, 2}), {B, Axis("pos", 2)})),
                     "update axis pos is too large to start at 5");
  EXPECT_VALUE_ERROR(updated_slice(x, {{"pos", int64_t(0)}}, NamedArray(at::zeros({2}), {E.resize(2)})),
                     "that are not in the original array");
}

TEST(Core, IndexingBySelectionMap) {
  at::Tensor t = randn({2, 3, 4}, 15);
  NamedArray x(t, {B, P, E});
  NamedArray a = x[{{"batch", 1}, {"embed", Slice(1, 3)}}];
  EXPECT_EQ(a.axes(), (AxisSpec{P, E.resize(2)}));
  EXPECT_TRUE(at::equal(a.array(), t.select(0, 1).narrow(1, 1, 2)));
  NamedArray neg = x[{{"embed", -1}}];
  EXPECT_TRUE(at::equal(neg.array(), t.select(2, 3)));
  NamedArray stepped = x[{{"embed", Slice(std::nullopt, std::nullopt, 2)}}];
  EXPECT_TRUE(at::equal(stepped.array(), t.slice(2, 0, 4, 2)));
  // Advanced indexing with a named integer array: its axes replace the indexed axis.
  at::Tensor ids = rand_int({5}, 4, 16);
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        NamedArray out = NamedArray(v[0], {B, P, E})[{{"embed", NamedArray(ids, {Axis("k", 5)})}}];
        EXPECT_EQ(out.axes(), (AxisSpec{B, P, Axis("k", 5)}));
        return out.array();
      },
      [&](const auto& v) { return v[0].index_select(2, ids); });
  // Two index arrays broadcast against each other by name; an integer too (numpy placement rules).
  at::Tensor i1 = rand_int({5}, 2, 17), i2 = rand_int({5}, 4, 18);
  NamedArray two = x[{{"batch", NamedArray(i1, {Axis("k", 5)})}, {"embed", NamedArray(i2, {Axis("k", 5)})}}];
  EXPECT_EQ(two.axes(), (AxisSpec{Axis("k", 5), P}));
  EXPECT_TRUE(at::equal(two.array(), t.index({i1, at::indexing::Slice(), i2})));
  EXPECT_VALUE_ERROR((x[{{"vocab", 0}}]), "axis vocab not found");
  EXPECT_VALUE_ERROR((x[{{"batch", 2}}]), "out of bounds");
  EXPECT_VALUE_ERROR((x[{{"batch", NamedArray(at::zeros({2}), {P.resize(2)})}}]), "Only integer NamedArrays");
}
