// Selection and functional updates by name: x.at(...).set/add/multiply/divide/min/max/get, dslice reads and
// writes, numpy's placement of advanced-index axes, and updated_slice with per-row starts. Each is checked
// against positional ATen (values and gradients, f64) and against values the original Haliax computed
// (tests/haliax/reference/gen_indexing.py).
#include "haliax/haliax.h"
#include "haliax/reference.h"
#include "haliax/reference/indexing_expected.inc"
#include "haliax/testing.h"

namespace haliax {
namespace {

namespace ai = at::indexing;
using testing::expect_matches_ref;
using testing::expect_same_value_and_grad;
using testing::randn;
using testing::ref_to_named;
namespace ref = haliax_ref::indexing;

const Axis A("a", 2), B("b", 3), C("c", 5), K("k", 4);

at::Tensor longs(std::vector<int64_t> v) { return at::tensor(v, at::kLong); }

// --- against positional ATen -------------------------------------------------------------------------------

// x.at(b=1, c=0:2).<op>(u) against the same update written on a positional view.
TEST(HaliaxAt, UpdatesAtIntAndSliceMatchAten) {
  at::Tensor t = randn({2, 3, 5}, 1), u = randn({2, 2}, 2) + 3.0;
  using Op = std::function<NamedArray(const IndexUpdateRef&, const NamedArray&)>;
  using Ref = std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>;
  const std::vector<std::pair<Op, Ref>> cases = {
      {[](const auto& r, const auto& v) { return r.set(v); }, [](const auto&, const auto& v) { return v; }},
      {[](const auto& r, const auto& v) { return r.add(v); }, [](const auto& old, const auto& v) { return old + v; }},
      {[](const auto& r, const auto& v) { return r.multiply(v); },
       [](const auto& old, const auto& v) { return old * v; }},
      {[](const auto& r, const auto& v) { return r.divide(v); },
       [](const auto& old, const auto& v) { return old / v; }},
      {[](const auto& r, const auto& v) { return r.min(v); },
       [](const auto& old, const auto& v) { return at::minimum(old, v); }},
      {[](const auto& r, const auto& v) { return r.max(v); },
       [](const auto& old, const auto& v) { return at::maximum(old, v); }},
  };
  for (const auto& [op, reference] : cases) {
    expect_same_value_and_grad(
        {t, u},
        [&](const auto& v) {
          NamedArray x(v[0], {A, B, C});
          NamedArray out = op(x.at({{"b", 1}, {"c", Slice(0, 2)}}), NamedArray(v[1], {A, C.resize(2)}));
          EXPECT_EQ(out.axes(), x.axes());
          return out.array();
        },
        [&](const auto& v) {
          at::Tensor out = v[0].clone();
          out.select(1, 1).narrow(1, 0, 2).copy_(reference(v[0].select(1, 1).narrow(1, 0, 2), v[1]));
          return out;
        });
  }
}

// Index arrays separated by a kept axis: the update has the broadcast axis first (k, b), as x[a=ik, c=jk] does.
// Repeated positions: add and multiply apply every update, set keeps the last one, min/max the extreme.
TEST(HaliaxAt, RepeatedPositionsMatchSequentialAten) {
  at::Tensor t = randn({2, 3, 5}, 3), u = randn({4, 3}, 4);
  const at::Tensor ik = longs({1, 0, 1, 1}), jk = longs({4, 0, 2, 4});  // (1, 4) appears twice
  NamedArray I(ik, {K}), J(jk, {K});
  using Op = std::function<NamedArray(const IndexUpdateRef&, const NamedArray&)>;
  using Step = std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>;
  const std::vector<std::pair<Op, Step>> cases = {
      {[](const auto& r, const auto& v) { return r.set(v); }, [](const auto&, const auto& v) { return v; }},
      {[](const auto& r, const auto& v) { return r.add(v); }, [](const auto& old, const auto& v) { return old + v; }},
      {[](const auto& r, const auto& v) { return r.multiply(v); },
       [](const auto& old, const auto& v) { return old * v; }},
      {[](const auto& r, const auto& v) { return r.min(v); },
       [](const auto& old, const auto& v) { return at::minimum(old, v); }},
      {[](const auto& r, const auto& v) { return r.max(v); },
       [](const auto& old, const auto& v) { return at::maximum(old, v); }},
  };
  for (const auto& [op, step] : cases) {
    expect_same_value_and_grad(
        {t, u},
        [&](const auto& v) {
          NamedArray x(v[0], {A, B, C});
          return op(x.at({{"a", I}, {"c", J}}), NamedArray(v[1], {K, B})).array();
        },
        [&](const auto& v) {
          at::Tensor out = v[0].clone();
          for (int64_t k = 0; k < 4; ++k) {
            at::Tensor row = out.select(0, ik[k].item<int64_t>()).select(1, jk[k].item<int64_t>());
            row.copy_(step(row.clone(), v[1][k]));
          }
          return out;
        });
  }
}

// A zero factor at a repeated position: the gradients of the other factors there are zero, the zero's is not.
TEST(HaliaxAt, MultiplyByZeroAtRepeatedPositionMatchesAten) {
  at::Tensor t = randn({2, 3, 5}, 16), u = randn({4}, 17);
  u[0] = 0.0;
  const at::Tensor jk = longs({4, 0, 2, 4});
  expect_same_value_and_grad(
      {t, u},
      [&](const auto& v) {
        return NamedArray(v[0], {A, B, C})
            .at({{"a", 1}, {"b", 2}, {"c", NamedArray(jk, {K})}})
            .multiply(NamedArray(v[1], {K}))
            .array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        for (int64_t k = 0; k < 4; ++k) {
          at::Tensor cell = out[1][2][jk[k].item<int64_t>()];
          cell.copy_(cell.clone() * v[1][k]);
        }
        return out;
      });
}

TEST(HaliaxAt, PowerAndApplyMatchSequentialAten) {
  at::Tensor t = randn({2, 3, 5}, 19).abs() + 0.5, u = randn({4}, 20);
  const at::Tensor jk = longs({4, 0, 2, 4});
  auto sel = [&] {
    return std::vector<std::pair<AxisSelector, NamedIndex>>{{"a", 1}, {"b", 0}, {"c", NamedArray(jk, {K})}};
  };
  expect_same_value_and_grad(
      {t, u},
      [&](const auto& v) {
        return NamedArray(v[0], {A, B, C}).at(sel()).power(NamedArray(v[1], {K})).array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        for (int64_t k = 0; k < 4; ++k) {
          at::Tensor cell = out[1][0][jk[k].item<int64_t>()];
          cell.copy_(cell.clone().pow(v[1][k]));
        }
        return out;
      });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return NamedArray(v[0], {A, B, C}).at(sel()).apply([](const NamedArray& y) { return y * y - 1.0; }).array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        for (int64_t k = 0; k < 4; ++k) {
          at::Tensor cell = out[1][0][jk[k].item<int64_t>()];
          cell.copy_(cell.clone() * cell.clone() - 1.0);
        }
        return out;
      });
  NamedArray x(t, {A, B, C});
  EXPECT_VALUE_ERROR(x.at(sel()).apply([](const NamedArray& y) { return sum(y); }), "func must be elementwise");
}

TEST(HaliaxAt, UpdatesAreFunctional) {
  at::Tensor t = randn({2, 3, 5}, 18);
  NamedArray x(t.clone(), {A, B, C});
  NamedArray y = x.at({{"b", 0}}).set(1.0).at({{"c", ds(1, 2)}}).add(1.0);
  EXPECT_TRUE(at::equal(x.array(), t));
  EXPECT_FALSE(at::equal(y.array(), t));
}

TEST(HaliaxAt, GetAndReadPlacementMatchAten) {
  at::Tensor t = randn({2, 3, 5}, 5);
  const at::Tensor jk = longs({4, 0, 2, 4});
  NamedArray J(jk, {K});
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        NamedArray out = NamedArray(v[0], {A, B, C})[{{"b", 2}, {"c", J}}];
        EXPECT_EQ(out.axes(), (AxisSpec{A, K}));  // contiguous advanced indices stay in place
        return out.array();
      },
      [&](const auto& v) {
        return v[0].index({ai::Slice(), 2, jk});
      });
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        NamedArray out = NamedArray(v[0], {A, B, C}).at({{"a", 1}, {"c", J}}).get();
        EXPECT_EQ(out.axes(), (AxisSpec{K, B}));  // separated by b: the broadcast axis goes first
        return out.array();
      },
      // A 1-element tensor: ATen's index() selects a plain integer before the advanced indices.
      [&](const auto& v) {
        return v[0].index({longs({1}), ai::Slice(), jk});
      });
}

TEST(HaliaxAt, ScalarAndNameBroadcastUpdates) {
  at::Tensor t = randn({2, 3, 5}, 6), u = randn({2}, 7);
  expect_same_value_and_grad(
      {t, u},
      [&](const auto& v) {
        NamedArray x(v[0], {A, B, C});
        // The update has only c: it broadcasts over a, the other selected axis.
        return x.at({{"b", 1}, {"c", Slice(1, 3)}})
            .add(NamedArray(v[1], {C.resize(2)}))
            .at({{"a", 0}})
            .set(2.5)
            .array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        out.select(1, 1).narrow(1, 1, 2).add_(v[1]);
        out.select(0, 0).fill_(2.5);
        return out;
      });
}

TEST(HaliaxAt, OutOfRangePositionsAreDroppedOrClipped) {
  at::Tensor t = randn({2, 3, 5}, 8), u = randn({4}, 9);
  NamedArray oob(longs({0, 7, -1, -9}), {K});
  expect_same_value_and_grad(
      {t, u},
      [&](const auto& v) {
        return NamedArray(v[0], {A, B, C}).at({{"a", 0}, {"b", 0}, {"c", oob}}).set(NamedArray(v[1], {K})).array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        out[0][0][0].copy_(v[1][0]);  // 7 and -9 are dropped; -1 is the last position
        out[0][0][4].copy_(v[1][2]);
        return out;
      });
  expect_same_value_and_grad(
      {t, u},
      [&](const auto& v) {
        return NamedArray(v[0], {A, B, C})
            .at({{"a", 0}, {"b", 0}, {"c", oob}})
            .add(NamedArray(v[1], {K}), IndexMode::kClip)
            .array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        out[0][0][0].add_(v[1][0] + v[1][3]);  // -9 -> -4 -> clamped to 0
        out[0][0][4].add_(v[1][1] + v[1][2]);
        return out;
      });
}

TEST(HaliaxAt, ErrorsNameTheAxis) {
  NamedArray x(randn({2, 3, 5}, 10), {A, B, C});
  EXPECT_VALUE_ERROR(x.at({{"d", 0}}).set(1.0), "axis d not found");
  EXPECT_VALUE_ERROR(x.at({{"b", 3}}).add(1.0), "index 3 is out of bounds for axis Axis(name='b', size=3)");
  EXPECT_VALUE_ERROR(x.at({{"b", 1}}).set(NamedArray(at::zeros({2, 4}, at::kDouble), {A, K})),
                     "Cannot broadcast {'a': 2, 'k': 4} to {'a': 2, 'c': 5}: extra axes present ['k']");
  EXPECT_VALUE_ERROR(x.at({{"b", 1}, {"b", 2}}).get(), "Axis b is indexed more than once");
  EXPECT_VALUE_ERROR(x.at({{"c", NamedArray(at::zeros({2}, at::kDouble), {K.resize(2)})}}).set(0.0),
                     "Only integer NamedArrays can be used for indexing axis c");
  NamedArray ints(at::zeros({3}, at::kLong), {B});
  EXPECT_VALUE_ERROR(ints.at({{"b", 0}}).divide(2), "at().divide needs a floating-point array");
}

// --- dslice ------------------------------------------------------------------------------------------------

TEST(HaliaxDSlice, ReadsMatchNarrowAndPastTheEndReadsZero) {
  at::Tensor t = randn({2, 3, 5}, 11);
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        return NamedArray(v[0], {A, B, C})[{{"c", ds(1, 3)}}].array();
      },
      [&](const auto& v) { return v[0].narrow(2, 1, 3); });
  NamedArray start(at::scalar_tensor(3, at::kLong), {});
  expect_same_value_and_grad(
      {t},
      [&](const auto& v) {
        NamedArray out = NamedArray(v[0], {A, B, C})[{{"c", dslice(start, C.resize(4))}}];
        EXPECT_EQ(out.axes(), (AxisSpec{A, B, C.resize(4)}));
        return out.array();
      },
      [&](const auto& v) {
        return at::cat({v[0].narrow(2, 3, 2), at::zeros({2, 3, 2}, at::kDouble)}, 2);
      });
  // A dslice is an advanced index: next to a separated integer its axis goes first.
  NamedArray sep = NamedArray(t, {A, B, C})[{{"a", 1}, {"c", ds(1, 2)}}];
  EXPECT_EQ(sep.axes(), (AxisSpec{C.resize(2), B}));
  EXPECT_TRUE(at::equal(sep.array(), t.select(0, 1).narrow(1, 1, 2).t()));
  NamedArray block = NamedArray(t, {A, B, C})[{{"b", dblock(1, 2)}}];  // rows 2 and 3 (past the end: 0)
  EXPECT_TRUE(at::equal(block.array().select(1, 0), t.select(1, 2)));
  EXPECT_TRUE(at::equal(block.array().select(1, 1), at::zeros({2, 5}, at::kDouble)));
}

TEST(HaliaxDSlice, WritesPastTheEndAreDropped) {
  at::Tensor t = randn({2, 3, 5}, 12), u = randn({4}, 13);
  expect_same_value_and_grad(
      {t, u},
      [&](const auto& v) {
        return NamedArray(v[0], {A, B, C}).at({{"c", ds(3, 4)}}).set(NamedArray(v[1], {C.resize(4)})).array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        out.narrow(2, 3, 2).copy_(v[1].narrow(0, 0, 2).expand({2, 3, 2}));
        return out;
      });
  NamedArray x(t, {A, B, C});
  EXPECT_VALUE_ERROR((x[{{"c", dslice(NamedArray(longs({1, 2}), {K.resize(2)}), 2)}}]),
                     "dslice start for axis c must be an integer or a 0-d integer array");
}

// --- updated_slice -----------------------------------------------------------------------------------------

TEST(HaliaxUpdatedSlice, PerRowStartsMatchAten) {
  const Axis Pos("pos", 6), Batch("batch", 3);
  at::Tensor t = randn({6, 3}, 14), u = randn({3, 2}, 15);
  const std::vector<int64_t> starts = {0, 2, 4};  // the last one, 5, is clamped to 4 so the block fits
  NamedArray s(longs({0, 2, 5}), {Batch});
  expect_same_value_and_grad(
      {t, u},
      [&](const auto& v) {
        NamedArray out =
            updated_slice(NamedArray(v[0], {Pos, Batch}), {{"pos", s}}, NamedArray(v[1], {Batch, Pos.resize(2)}));
        EXPECT_EQ(out.axes(), (AxisSpec{Batch, Pos}));  // Haliax vmaps over batch, which moves it to the front
        return out.array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].t().clone();
        for (int64_t b = 0; b < 3; ++b) out[b].narrow(0, starts[b], 2).copy_(v[1][b]);
        return out;
      });
  // An update without an axis is written over the whole axis.
  expect_same_value_and_grad(
      {t, u.select(0, 0)},
      [&](const auto& v) {
        return updated_slice(NamedArray(v[0], {Pos, Batch}), {{"pos", int64_t(1)}}, NamedArray(v[1], {Pos.resize(2)}))
            .array();
      },
      [&](const auto& v) {
        at::Tensor out = v[0].clone();
        out.narrow(0, 1, 2).copy_(v[1].unsqueeze(1).expand({2, 3}));
        return out;
      });
  NamedArray x(t, {Pos, Batch});
  EXPECT_VALUE_ERROR(
      updated_slice(x, {{"pos", NamedArray(longs({1, 2}), {Axis("e", 2)})}}, NamedArray(u, {Batch, Pos.resize(2)})),
      "axis e not found in original array's axes");
  EXPECT_VALUE_ERROR(updated_slice(x, {{"batch", s}}, NamedArray(u, {Batch, Pos.resize(2)})),
                     "once its start's axes are mapped over");
}

// --- against the original Haliax ---------------------------------------------------------------------------

TEST(HaliaxIndexingReference, ReadPlacementMatchesTheOriginal) {
  NamedArray x = ref_to_named(ref::x), ik = ref_to_named(ref::ik), jk = ref_to_named(ref::jk);
  NamedArray jm = ref_to_named(ref::jm), jb = ref_to_named(ref::jb);
  expect_matches_ref(x[{{"b", 1}, {"c", Slice(0, 2)}}], ref::int_and_slice);
  expect_matches_ref(x[{{"b", 2}, {"c", jk}}], ref::adv_contiguous);
  expect_matches_ref(x[{{"a", ik}, {"c", jk}}], ref::adv_separated);
  expect_matches_ref(x[{{"a", 1}, {"c", jk}}], ref::adv_int_separated);
  expect_matches_ref(x[{{"a", ik}, {"c", jm}}], ref::adv_two_axes);
  expect_matches_ref(x[{{"c", jb}}], ref::adv_shares_kept_axis);
  expect_matches_ref(x[{{"c", Slice(std::nullopt, std::nullopt, 2)}, {"a", -1}}], ref::step_slice);
  expect_matches_ref(x[{{"a", NamedArray(longs({0, 1, 0}), {B})}}], ref::adv_kept_axis_matched);
  EXPECT_VALUE_ERROR((x[{{"d", 0}}]), "axis d not found in");
  EXPECT_EQ(std::string(ref::err_axis_not_found.message).rfind("axis d not found in", 0), 0u);
}

TEST(HaliaxIndexingReference, DSliceMatchesTheOriginal) {
  NamedArray x = ref_to_named(ref::x), start = ref_to_named(ref::start);
  expect_matches_ref(x[{{"c", ds(1, 3)}}], ref::ds_read);
  expect_matches_ref(x[{{"c", ds(3, 4)}}], ref::ds_read_past_end);
  expect_matches_ref(x[{{"c", ds(-2, 4)}}], ref::ds_read_negative);
  expect_matches_ref(x[{{"c", ds(-7, 4)}}], ref::ds_read_before_start);
  expect_matches_ref(x[{{"c", ds(start, 2)}}], ref::ds_read_array_start);
  expect_matches_ref(x[{{"a", 1}, {"c", ds(1, 2)}}], ref::ds_read_with_int);
  expect_matches_ref(x[{{"b", dblock(1, 2)}}], ref::ds_block);
  expect_matches_ref(x.at({{"c", ds(3, 4)}}).set(-1.0), ref::set_ds_past_end);
  expect_matches_ref(x.at({{"c", ds(-2, 4)}}).set(-1.0), ref::set_ds_negative);
  expect_matches_ref(x.at({{"c", ds(start, 3)}}).add(1.0), ref::add_ds_array_start);
}

TEST(HaliaxIndexingReference, AtMatchesTheOriginal) {
  NamedArray x = ref_to_named(ref::x), ik = ref_to_named(ref::ik), jk = ref_to_named(ref::jk);
  NamedArray jb = ref_to_named(ref::jb), oob = ref_to_named(ref::oob), vk = ref_to_named(ref::vk);
  expect_matches_ref(x.at({{"c", ds(3, 4)}}).get(), ref::get_default_clamps);
  expect_matches_ref(x.at({{"c", ds(3, 4)}}).get(IndexMode::kFill), ref::get_fill_nan);
  expect_matches_ref(x.at({{"c", ds(3, 4)}}).get(IndexMode::kFill, -1.0), ref::get_fill_value);
  NamedArray xi = ref_to_named(ref::xi).astype(at::kInt);  // int32 as in the original: its fill is the lowest int32
  expect_matches_ref(xi.at({{"c", ds(3, C.resize(4))}}).get(IndexMode::kFill), ref::get_fill_int);
  expect_matches_ref(x.at({{"a", 0}, {"b", 0}, {"c", oob}}).get(), ref::get_oob_array);
  expect_matches_ref(x.at({{"b", 1}, {"c", Slice(0, 2)}}).set(ref_to_named(ref::v_ac)), ref::set_int_slice);
  expect_matches_ref(x.at({{"b", 1}, {"c", Slice(0, 2)}}).set(0.5), ref::set_scalar);
  expect_matches_ref(x.at({{"b", 1}, {"c", Slice(0, 2)}}).add(ref_to_named(ref::v_c)), ref::add_broadcast);
  const std::vector<std::pair<AxisSelector, NamedIndex>> sel = {{"a", 0}, {"b", 0}, {"c", jk}};
  expect_matches_ref(x.at(sel).set(vk), ref::set_dup);
  expect_matches_ref(x.at(sel).add(vk), ref::add_dup);
  expect_matches_ref(x.at(sel).multiply(vk), ref::multiply_dup);
  expect_matches_ref(x.at(sel).divide(vk), ref::divide_dup);
  expect_matches_ref(x.at(sel).min(NamedArray(at::tensor({-1.0, -20.0, 0.0, -30.0}, at::kDouble), {K})), ref::min_dup);
  expect_matches_ref(x.at(sel).max(vk), ref::max_dup);
  expect_matches_ref(x.at(sel).power(NamedArray(at::tensor({2.0, 3.0, 3.0, 2.0}, at::kDouble), {K})), ref::power_dup);
  expect_matches_ref(x.at(sel).apply([](const NamedArray& v) { return v * 2.0 + 3.0; }), ref::apply_dup);
  NamedArray kb(at::arange(12, at::kDouble).reshape({4, 3}), {K, B});
  expect_matches_ref(x.at({{"a", ik}, {"c", jk}}).set(kb), ref::set_separated);
  expect_matches_ref(x.at({{"c", jb}}).set(100.0), ref::set_shares_kept_axis);
  expect_matches_ref(x.at({{"a", 0}, {"b", 0}, {"c", oob}}).set(vk), ref::set_oob_dropped);
  expect_matches_ref(x.at({{"a", 0}, {"b", 0}, {"c", oob}}).set(vk, IndexMode::kClip), ref::set_oob_clip);
  EXPECT_VALUE_ERROR(x.at({{"b", 1}}).set(NamedArray(at::zeros({2, 4}, at::kDouble), {A, K})),
                     ref::err_at_extra_axes.message);
}

// Index arrays that share axes with the array (Haliax's test_scatter_gather.py cases): those axes are matched.
TEST(HaliaxIndexingReference, BatchedSelectorsMatchTheOriginal) {
  NamedArray logits = ref_to_named(ref::logits), tok = ref_to_named(ref::tok), grid = ref_to_named(ref::grid);
  expect_matches_ref(logits[{{"vocab", tok}}], ref::sg_batched_gather);
  expect_matches_ref(logits.at({{"vocab", tok}}).add(ones(tok.axes(), at::kDouble)), ref::sg_batched_add);
  expect_matches_ref(logits.at({{"vocab", tok}}).set(-1.0), ref::sg_batched_set);
  expect_matches_ref(grid[{{"x", ref_to_named(ref::ix)}, {"y", ref_to_named(ref::iy)}}], ref::sg_noncontiguous);
  expect_matches_ref(logits[{{"vocab", ds(1, 3)}}][{{"vocab", ref_to_named(ref::tok3)}}], ref::sg_dslice_then_select);
}

// Gradients of sum(w * result) in x and in the update, against jax.grad of the original.
void expect_grads_match(const std::function<NamedArray(const NamedArray&, const NamedArray&)>& f,
                        const NamedArray& update, const testing::RefArray& dx, const testing::RefArray& du) {
  NamedArray x0 = ref_to_named(ref::x);
  NamedArray x(x0.array().clone().requires_grad_(true), x0.axes());
  NamedArray u(update.array().clone().requires_grad_(true), update.axes());
  sum(ref_to_named(ref::w) * f(x, u)).array().backward();
  expect_matches_ref(x.grad(), dx);
  expect_matches_ref(u.grad(), du);
}

TEST(HaliaxIndexingReference, AtGradientsMatchTheOriginal) {
  const std::vector<std::pair<AxisSelector, NamedIndex>> sel = {{"a", 0}, {"b", 0}, {"c", ref_to_named(ref::jk)}};
  NamedArray vk = ref_to_named(ref::vk), ties = ref_to_named(ref::ties);
  expect_grads_match([&](const auto& x, const auto& u) { return x.at(sel).set(u); }, vk, ref::set_dup_grad_dx,
                     ref::set_dup_grad_du);
  expect_grads_match([&](const auto& x, const auto& u) { return x.at(sel).add(u); }, vk, ref::add_dup_grad_dx,
                     ref::add_dup_grad_du);
  expect_grads_match([&](const auto& x, const auto& u) { return x.at(sel).max(u); }, ties, ref::max_tie_grad_dx,
                     ref::max_tie_grad_du);
  expect_grads_match([&](const auto& x, const auto& u) { return x.at(sel).min(u); }, ties, ref::min_tie_grad_dx,
                     ref::min_tie_grad_du);
  expect_grads_match(
      [&](const auto& x, const auto& u) {
        return x.at({{"c", ds(3, 4)}}).set(u);
      },
      NamedArray(at::arange(4, at::kDouble), {C.resize(4)}), ref::set_ds_grad_dx, ref::set_ds_grad_du);
}

TEST(HaliaxIndexingReference, UpdatedSliceMatchesTheOriginal) {
  NamedArray cache = ref_to_named(ref::cache), row_start = ref_to_named(ref::row_start);
  NamedArray u_pos = ref_to_named(ref::u_pos), plain = ref_to_named(ref::plain);
  expect_matches_ref(updated_slice(cache, {{"pos", row_start}}, u_pos), ref::us_per_row_shared_update);
  expect_matches_ref(updated_slice(cache, {{"pos", row_start}}, ref_to_named(ref::u_rows)), ref::us_per_row_update);
  expect_matches_ref(updated_slice(cache, {{"pos", row_start}}, ref_to_named(ref::u_tok)), ref::us_per_row_one_token);
  expect_matches_ref(updated_slice(cache, {{"pos", ref_to_named(ref::neg_rows)}}, u_pos), ref::us_negative_row_start);
  expect_matches_ref(updated_slice(ref_to_named(ref::cache3), {{"pos", ref_to_named(ref::e_start)}}, u_pos),
                     ref::us_two_mapped_axes);
  expect_matches_ref(updated_slice(plain, {{"pos", int64_t(1)}, {"e", int64_t(1)}}, u_pos),
                     ref::us_missing_axis_broadcasts);
  expect_matches_ref(updated_slice(plain, {{"pos", int64_t(-3)}}, u_pos), ref::us_negative_start);
  NamedArray zeros_pos = zeros({Axis("pos", 6)}, at::kDouble);
  expect_matches_ref(
      updated_slice(zeros_pos, {{"pos", int64_t(2)}}, NamedArray(at::scalar_tensor(5.0, at::kDouble), {})),
      ref::us_scalar_1d);
  expect_matches_ref(updated_slice(plain, {{"pos", ref_to_named(ref::start)}}, u_pos), ref::us_0d_start);
  EXPECT_VALUE_ERROR(updated_slice(plain, {{"pos", row_start}}, u_pos), ref::err_us_start_axis.message);
  EXPECT_VALUE_ERROR(updated_slice(plain, {{"pos", int64_t(5)}}, u_pos), ref::err_us_too_large.message);
  EXPECT_VALUE_ERROR(updated_slice(plain, {{"pos", int64_t(0)}, {"extra", int64_t(0)}}, u_pos),
                     "axis extra not found in");
  EXPECT_EQ(std::string(ref::err_us_unknown_axis.message).rfind("axis extra not found in", 0), 0u);
}

TEST(HaliaxIndexingReference, SliceWithRuntimeStartMatchesTheOriginal) {
  NamedArray x = ref_to_named(ref::x);
  auto start = [](int64_t s) { return NamedArray(at::scalar_tensor(s, at::kLong), {}); };
  expect_matches_ref(slice(x, "c", start(-2), 2), ref::slice_negative_start);
  expect_matches_ref(slice(x, "c", start(4), 2), ref::slice_start_clamped);
}

}  // namespace
}  // namespace haliax
