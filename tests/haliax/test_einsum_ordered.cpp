// Ordered einsum with "..." on the output side: named output axes keep their place around the "..."
// ("b ... d -> d ... b"), as in Haliax, against values the original computed (reference/gen_port.py) and against
// positional at::einsum for values and gradients. Also the original's test_einsum.py, ported.
#include "haliax/reference.h"
#include "haliax/reference/port_expected.inc"
#include "testing.h"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::expect_same_value_and_grad;
using testing::randn;
using testing::ref_to_named;
namespace ref = haliax_ref::port;

TEST(EinsumOrdered, EllipsisOnTheOutputKeepsNamedAxesInPlace) {
  NamedArray x = ref_to_named(ref::ein_x), y = ref_to_named(ref::ein_y);
  expect_matches_ref(einsum("b ... d -> d ... b", {x}), ref::ein_b_d_swap);
  expect_matches_ref(einsum("b ... d -> ... b d", {x}), ref::ein_b_first_d_mid);
  expect_matches_ref(einsum("b ... -> ... b", {x}), ref::ein_b_last);
  expect_matches_ref(einsum("... d -> d ...", {x}), ref::ein_ell_first_then_d);
  expect_matches_ref(einsum("b ... d, d e -> e ... b", {x, y}), ref::ein_contract_d_put_e_first);
  expect_matches_ref(einsum("b ... d, d e -> b e ...", {x, y}), ref::ein_contract_d_e_middle);
  expect_matches_ref(einsum("b ... d, d e -> ...", {x, y}), ref::ein_contract_d_all_ell);
}

TEST(EinsumOrdered, AttentionScoresWithLeadingEllipsis) {
  NamedArray q = ref_to_named(ref::ein_q), k = ref_to_named(ref::ein_k);
  expect_matches_ref(einsum("... s h d, ... t h d -> ... s t h d", {q, k}), ref::ein_qk);
  expect_matches_ref(einsum("... s h d, ... t h d -> ... h s t", {q, k}), ref::ein_qk_scores);
}

TEST(EinsumOrdered, OutputOnlyAndUnorderedFormsWithEllipsisInTheMiddle) {
  NamedArray x = ref_to_named(ref::ein_x), y = ref_to_named(ref::ein_y);
  expect_matches_ref(einsum("-> d ... w", {x, y}), ref::ein_out_only_mid);
  expect_matches_ref(einsum("{d h} -> d ... h", {x, y}), ref::ein_unordered_mid);
}

TEST(EinsumOrdered, ValuesAndGradientsMatchATen) {
  const Axis B("b", 2), H("h", 3), W("w", 2), D("d", 4), E("e", 3);
  expect_same_value_and_grad(
      {randn({2, 3, 2, 4}, 11), randn({4, 3}, 12)},
      [&](const auto& v) {
        NamedArray r = einsum("b ... d, d e -> e ... b", {NamedArray(v[0], {B, H, W, D}), NamedArray(v[1], {D, E})});
        EXPECT_EQ(r.axes(), (AxisSpec{E, H, W, B}));
        return r.array();
      },
      [](const auto& v) {
        return at::einsum("bhwd,de->ehwb", {v[0], v[1]});
      });
  expect_same_value_and_grad(
      {randn({2, 3, 2, 4}, 13)},
      [&](const auto& v) {
        return einsum("b ... d -> d ... b", {NamedArray(v[0], {B, H, W, D})}).array();
      },
      [](const auto& v) {
        return v[0].permute({3, 1, 2, 0});
      });
}

TEST(EinsumOrdered, ErrorsUseHaliaxsWording) {
  NamedArray x = ref_to_named(ref::ein_x);
  EXPECT_VALUE_ERROR(einsum("-> h w", {x}, {{"Q", Axis("Q", 2)}}), "Unused aliases from kwargs: Q");
  EXPECT_VALUE_ERROR(einsum("b h w d -> d", {x}, {{"zz", Axis("zz", 2)}}), "Unused aliases from kwargs: zz");
  EXPECT_VALUE_ERROR(einsum("-> hh w", {x}, {{"hh", Axis("h", 4)}}), ref::ein_alias_size_mismatch.message);
  try {
    einsum("-> h w", {x}, {{"Q", Axis("Q", 2)}});
  } catch (const ValueError& e) {
    EXPECT_EQ(std::string(e.what()), ref::ein_unused_kwargs.message);
  }
}

// --- the original's tests/test_einsum.py ---------------------------------------------------------------------

struct HWD {
  Axis Height{"Height", 2}, Width{"Width", 3}, Depth{"Depth", 4};
  NamedArray m1 = NamedArray(at::arange(24, at::kDouble).reshape({2, 3, 4}), {Height, Width, Depth});
  NamedArray m2 = NamedArray(at::arange(24, at::kDouble).reshape({4, 3, 2}) * 0.5 - 3, {Depth, Width, Height});
  at::Tensor ref(const char* spec) const { return at::einsum(spec, {m1.array(), m2.array()}); }
};

void expect_axes_and_values(const NamedArray& got, const AxisSpec& axes, const at::Tensor& expected) {
  EXPECT_EQ(got.axes(), axes);
  EXPECT_TRUE(at::allclose(got.array(), expected, 1e-12, 1e-12));
}

TEST(EinsumPorted, Positional) {
  HWD t;
  expect_axes_and_values(einsum("i j k,k j i-> j k", {t.m1, t.m2}), {t.Width, t.Depth}, t.ref("ijk,kji->jk"));
  expect_axes_and_values(einsum("i j k,k j i->k", {t.m1, t.m2}), {t.Depth}, t.ref("ijk,kji->k"));
  expect_axes_and_values(einsum("i j k,k j i->", {t.m1, t.m2}), {}, t.ref("ijk,kji->"));
}

TEST(EinsumPorted, PositionalAliases) {
  HWD t;
  expect_axes_and_values(einsum("i j k,k j i-> j k", {t.m1, t.m2}, {{"i", t.Height}}), {t.Width, t.Depth},
                         t.ref("ijk,kji->jk"));
  EXPECT_THROW(einsum("i j k,k j i-> j k", {t.m1, t.m2}, {{"i", t.Width}}), ValueError);
  EXPECT_THROW(einsum("i j k,q j i-> j k", {t.m1, t.m2}, {{"i", t.Height}, {"q", t.Height}}), ValueError);
  EXPECT_THROW(einsum("i j k,k j i-> j k", {t.m1, t.m2}, {{"i", t.Height}, {"q", t.Height}}), ValueError);
}

TEST(EinsumPorted, Named) {
  HWD t;
  const AxisSpec hw{t.Height, t.Width};
  expect_axes_and_values(einsum("{Height Width Depth} -> Height Width", {t.m1, t.m2}), hw, t.ref("ijk,kji->ij"));
  expect_axes_and_values(einsum(" -> Height Width", {t.m1, t.m2}), hw, t.ref("ijk,kji->ij"));
  expect_axes_and_values(einsum("{Height Width Depth} -> Depth", {t.m1, t.m2}), {t.Depth}, t.ref("ijk,kji->k"));
  expect_axes_and_values(einsum("-> Depth", {t.m1, t.m2}), {t.Depth}, t.ref("ijk,kji->k"));
  expect_axes_and_values(einsum("{Height Width Depth} -> ", {t.m1, t.m2}), {}, t.ref("ijk,kji->"));
  expect_axes_and_values(einsum("{} ->", {t.m1, t.m2}), {t.Height, t.Width, t.Depth}, t.ref("ijk,kji->ijk"));
  expect_axes_and_values(einsum("{Height Depth} -> ", {t.m1, t.m2}), {t.Width}, t.ref("ijk,kji->j"));
}

TEST(EinsumPorted, UnorderedEllipses) {
  HWD t;
  expect_axes_and_values(einsum("{...} ->", {t.m1, t.m2}), {}, t.ref("ijk,kji->"));
  expect_axes_and_values(einsum("{...} -> ...", {t.m1, t.m2}), {t.Height, t.Width, t.Depth}, t.ref("ijk,kji->ijk"));
  expect_axes_and_values(einsum("{} -> ...", {t.m1, t.m2}), {t.Height, t.Width, t.Depth}, t.ref("ijk,kji->ijk"));
  expect_axes_and_values(einsum("{Depth} -> Depth ...", {t.m1, t.m2}), {t.Depth, t.Height, t.Width},
                         t.ref("ijk,kji->kij"));
  expect_axes_and_values(einsum("{Depth Height} -> Depth ... Height", {t.m1, t.m2}), {t.Depth, t.Width, t.Height},
                         t.ref("ijk,kji->kji"));
  expect_axes_and_values(einsum("{Depth} -> ... Depth ...", {t.m1, t.m2}), {t.Height, t.Width, t.Depth},
                         t.ref("ijk,kji->ijk"));
}

TEST(EinsumPorted, UnorderedAliases) {
  HWD t;
  expect_axes_and_values(einsum("{h w d} -> h w", {t.m1, t.m2}, {{"h", t.Height}, {"w", t.Width}, {"d", t.Depth}}),
                         {t.Height, t.Width}, t.ref("ijk,kji->ij"));
  EXPECT_VALUE_ERROR(einsum("{h w d} -> h w", {t.m1, t.m2}, {{"h", t.Height}, {"w", t.Width}}), "Axis d not present");
  EXPECT_VALUE_ERROR(einsum("{h w} -> h w", {t.m1, t.m2}, {{"h", t.Height}, {"w", t.Width}, {"d", t.Depth}}),
                     "Axis alias d not used");
}

TEST(EinsumPorted, OrderedEllipsisAndSameInitialLetter) {
  HWD t;
  expect_axes_and_values(einsum("h ... d,d ... h-> ...", {t.m1, t.m2}), {t.Width}, t.ref("ijk,kji->j"));
  const Axis Hidth("Hidth", 3);
  NamedArray a = t.m1.rename({{"Width", "Hidth"}}), b = t.m2.rename({{"Width", "Hidth"}});
  expect_axes_and_values(einsum("h ... d,d ... h-> ...", {a, b}), {Hidth}, t.ref("ijk,kji->j"));
  expect_axes_and_values(einsum("{Height Hidth Depth} -> Hidth", {a, b}), {Hidth}, t.ref("ijk,kji->j"));
}

TEST(EinsumPorted, OrderedEllipsisPreservesAxisOrder) {
  const Axis Batch("batch", 4), SeqQ("seq_q", 4), SeqK("seq_k", 4), Head("head", 2), DHead("dhead", 8);
  NamedArray q(at::ones({4, 4, 2, 8}), {Batch, SeqQ, Head, DHead});
  NamedArray k(at::ones({4, 4, 2, 8}), {Batch, SeqK, Head, DHead});
  NamedArray out = einsum("... s h d, ... t h d -> ... s t h d", {q, k});
  EXPECT_EQ(out.axes(), (AxisSpec{Batch, SeqQ, SeqK, Head, DHead}));
}

TEST(EinsumPorted, VariousErrors) {
  HWD t;
  EXPECT_VALUE_ERROR(einsum("-> Height Height", {t.m1, t.m2}), "multiple times");
  EXPECT_VALUE_ERROR(einsum("x y z, x y z -> x", {t.m1, t.m2, t.m1}), "does not match number of arrays");
  EXPECT_VALUE_ERROR(einsum("x y z -> x", {t.m1, t.m2}), "does not match number of arrays");
  EXPECT_VALUE_ERROR(einsum("x y z a b -> x", {t.m1}), "Mismatched number of axes");
  EXPECT_VALUE_ERROR(einsum("x y ... a b -> x", {t.m1}), "Mismatched number of axes");
  EXPECT_VALUE_ERROR(einsum("x y -> x", {t.m1}), "Mismatched number of axes");
}

TEST(EinsumPorted, DocumentationExamples) {
  const Axis Batch("batch", 2), Embed("embed", 5), Hh("h", 3), Ww("w", 2), C("c", 3);
  NamedArray im(randn({2, 3, 2, 3}, 21), {Batch, Hh, Ww, C});
  NamedArray w2(randn({3, 5}, 22), {C, Embed});
  at::Tensor bhwe = at::einsum("bhwc,ce->bhwe", {im.array(), w2.array()});
  const AxisSpec out{Batch, Hh, Ww, Embed};
  expect_axes_and_values(einsum("b h w c, c e -> b h w e", {im, w2}), out, bhwe);
  expect_axes_and_values(einsum("... c, c e -> ... e", {im, w2}), out, bhwe);
  expect_axes_and_values(einsum("{c embed} -> embed", {im, w2}), out, bhwe);
  expect_axes_and_values(einsum("-> batch h w embed", {im, w2}), out, bhwe);
  expect_axes_and_values(einsum("{...} -> ...", {im, w2}), {Batch, Hh, Ww, C, Embed},
                         at::einsum("bhwc,ce->bhwce", {im.array(), w2.array()}));
  expect_axes_and_values(einsum("{...} -> ", {im, w2}), {}, at::einsum("bhwc,ce->", {im.array(), w2.array()}));
}

TEST(EinsumPorted, OutputOnlyMode) {
  HWD t;
  NamedArray m3(at::arange(8, at::kDouble).reshape({2, 4}), {t.Height, t.Depth});
  expect_axes_and_values(einsum("-> Height Width", {t.m1, t.m2}), {t.Height, t.Width}, t.ref("ijk,kji->ij"));
  expect_axes_and_values(einsum("-> Height", {t.m1}), {t.Height}, at::einsum("ijk->i", {t.m1.array()}));
  expect_axes_and_values(einsum("-> ...", {t.m1, t.m2}), {t.Height, t.Width, t.Depth}, t.ref("ijk,kji->ijk"));
  expect_axes_and_values(einsum("-> ... Width", {t.m1, t.m2}), {t.Height, t.Depth, t.Width}, t.ref("ijk,kji->ikj"));
  expect_axes_and_values(einsum("-> Depth ... Width", {t.m1, t.m2}), {t.Depth, t.Height, t.Width},
                         t.ref("ijk,kji->kij"));
  EXPECT_THROW(einsum("-> Q Width", {t.m1}), ValueError);
  EXPECT_VALUE_ERROR(einsum("-> Height Width", {t.m1, t.m2}, {{"Q", Axis("Q", 2)}}), "Unused aliases from kwargs: Q");
  expect_axes_and_values(einsum("-> h w", {t.m1}, {{"h", t.Height}, {"w", t.Width}}), {t.Height, t.Width},
                         at::einsum("ijk->ij", {t.m1.array()}));
  expect_axes_and_values(einsum("-> h w", {t.m1, m3}, {{"h", t.Height}, {"w", t.Width}}), {t.Height, t.Width},
                         at::einsum("ijk,ik->ij", {t.m1.array(), m3.array()}));
  EXPECT_VALUE_ERROR(einsum("-> h w", {t.m1}, {{"h", t.Height.resize(4)}, {"w", t.Width}}), "Size mismatch");
  EXPECT_VALUE_ERROR(einsum("-> h w", {m3}, {{"h", t.Height}, {"w", t.Width.resize(4)}}),
                     "not found in any of the input arrays");
}

}  // namespace
}  // namespace haliax
