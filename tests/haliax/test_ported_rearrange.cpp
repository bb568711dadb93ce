// The original's tests/test_rearrange.py and tests/test_parsing.py, ported: einops-style rearrange (ordered and
// unordered lhs, "...", flattening, unflattening, several ellipses) with values checked against reshape/permute,
// its semantic errors, and the parser's captures and errors.
#include "haliax/ops/parsing.h"
#include "testing.h"

namespace haliax {
namespace {

const Axis H("H", 6), W("W", 4), C("C", 3), D("D", 2), B("B", 5);
const Axis Q("Q", 5 * 6), E("E", 6 * 4 * 2);

// z: (B, D, H, W, C); zq: (Q, D, W, C), arange values (the original draws random ints; any distinct values do).
NamedArray z() {
  return NamedArray(at::arange(5 * 2 * 6 * 4 * 3, at::kLong).reshape({5, 2, 6, 4, 3}), {B, D, H, W, C});
}
NamedArray zq() { return NamedArray(at::arange(30 * 2 * 4 * 3, at::kLong).reshape({30, 2, 4, 3}), {Q, D, W, C}); }

void expect(const NamedArray& got, const AxisSpec& axes, const at::Tensor& values) {
  EXPECT_EQ(got.axes(), axes);
  EXPECT_TRUE(at::equal(got.array(), values));
}

TEST(RearrangePorted, IdentityTransposeAndUnordered) {
  const at::Tensor t = z().array();
  expect(rearrange(z(), "b d h w c -> b d h w c"), {B, D, H, W, C}, t);
  const at::Tensor tt = t.permute({0, 2, 3, 1, 4});
  expect(rearrange(z(), "b d h w c -> b h w d c"), {B, H, W, D, C}, tt);
  expect(rearrange(z(), "{B D H W C} -> B H W D C"), {B, H, W, D, C}, tt);
  expect(rearrange(z(), "{C W H D B} -> B H W D C"), {B, H, W, D, C}, tt);
}

TEST(RearrangePorted, Ellipsis) {
  const at::Tensor t = z().array();
  EXPECT_EQ(rearrange(z(), "... w c -> ... c w").axes(), (AxisSpec{B, D, H, C, W}));
  EXPECT_EQ(rearrange(z(), "b d ... -> d ... b").axes(), (AxisSpec{D, H, W, C, B}));
  expect(rearrange(z(), "b ... c -> b c ..."), {B, C, D, H, W}, t.permute({0, 4, 1, 2, 3}));
  EXPECT_EQ(rearrange(z(), "{W C} -> ... C W").axes(), (AxisSpec{B, D, H, C, W}));
  EXPECT_EQ(rearrange(z(), "{B D} -> D ... B").axes(), (AxisSpec{D, H, W, C, B}));
  expect(rearrange(z(), "{B C} -> B C ..."), {B, C, D, H, W}, t.permute({0, 4, 1, 2, 3}));
  expect(rearrange(z(), "{qqq C} -> qqq C ...", {{"qqq", B}}), {B, C, D, H, W}, t.permute({0, 4, 1, 2, 3}));
}

TEST(RearrangePorted, Flattening) {
  const at::Tensor flat = z().array().permute({1, 0, 2, 3, 4}).reshape({2, 30, 4, 3});
  expect(rearrange(z(), "b d h w c -> d (Q: b h) w c"), {D, Q, W, C}, flat);
  expect(rearrange(z(), "b d h ... c -> d (Q: b h) ... c"), {D, Q, W, C}, flat);
  expect(rearrange(z(), "{B D H} -> D (Q: B H) ..."), {D, Q, W, C}, flat);
  expect(rearrange(z(), "{B D H ... C} -> D (Q: B H) ... C"), {D, Q, W, C}, flat);
}

TEST(RearrangePorted, Unflattening) {
  const at::Tensor t = zq().array().reshape({5, 6, 2, 4, 3}).permute({0, 2, 1, 3, 4});
  expect(rearrange(zq(), "(Q: B H) d w c -> B d H w c", {{"B", 5}}), {B, D, H, W, C}, t);
  expect(rearrange(zq(), "(Q: b H) d w c -> b d H w c", {{"b", B}}), {B, D, H, W, C}, t);
  expect(rearrange(zq(), "{ (Q: B H) D } -> B D H ... ", {{"B", 5}}), {B, D, H, W, C}, t);
  expect(rearrange(zq(), "{ (Q: b H) D } -> b D H ... ", {{"b", B}}), {B, D, H, W, C}, t);
  const Axis Z("Z", 5 * 3);
  const at::Tensor u = zq().array().reshape({5, 6, 2, 4, 3}).permute({2, 0, 4, 3, 1}).reshape({2, 15, 4, 6});
  expect(rearrange(zq(), "(Q: B H) d w c -> d (Z: B c) w H", {{"H", H}}), {D, Z, W, H}, u);
  expect(rearrange(zq(), "{ W D C (Q: B H)} -> D (Z: B C) W H", {{"H", H}}), {D, Z, W, H}, u);
}

TEST(RearrangePorted, MultipleEllipses) {
  EXPECT_EQ(rearrange(z(), "b d h w c  -> d ... c ... h").axes(), (AxisSpec{D, B, C, W, H}));
  EXPECT_EQ(rearrange(z(), "b d h w c -> d ... (Q: b h) ... w").axes(), (AxisSpec{D, Q, C, W}));
  EXPECT_EQ(rearrange(z(), "b d h w c -> d ... (BB: b) ... w").axes(), (AxisSpec{D, B.alias("BB"), H, C, W}));
  EXPECT_EQ(rearrange(z(), "{H W D} -> ... (E: H W D) ...").axes(), (AxisSpec{B, E, C}));
  EXPECT_EQ(rearrange(z(), "{B H} -> ... (Q: B H) ...").axes(), (AxisSpec{Q, D, W, C}));
  EXPECT_EQ(rearrange(z(), "{B H W} -> ... (Q: B H) ... W").axes(), (AxisSpec{Q, D, C, W}));
}

TEST(RearrangePorted, SemanticErrors) {
  EXPECT_VALUE_ERROR(rearrange(z(), "b d h w c q -> b d h w c q"), "Too many axes in lhs");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d h w -> b d h w c q"), "Not all axes are bound");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d h w x y z -> b d h w c q"), "Too many axes in lhs");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d h w c -> b d h w c q"), "Axis q is not bound on the lhs");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d ... h w c ... -> b d h w c ..."), "Only one ellipsis allowed");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d c q q -> b d h w c q"), "Capture q is assigned more than once");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d c q t -> b d c t q q"), "is used more than once");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d c (q q) z -> b d h w c q", {{"q", 4}}),
                     "Capture q is assigned more than once");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d c q z -> b d c z"), "Not all intermediate axes are used");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d c q z ... d e f -> b d c q d e f"), "is bound more than once");
  EXPECT_VALUE_ERROR(rearrange(z(), "(x y) d c q z -> d c q x y z", {{"x", 13}, {"y", 17}}), "not divide");
  EXPECT_VALUE_ERROR(rearrange(z(), "(x y) d c q z -> d c q x y z", {{"x", 13}}), "not divide");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d ... h w c  -> (b d h w c) ..."), "must have a name");
  EXPECT_VALUE_ERROR(rearrange(z(), "b d ... h w c  -> (z: w r) ..."), "not bound on the lhs");
  EXPECT_VALUE_ERROR(rearrange(z(), "(b q) d ... h w c  -> (z: w r) ..."), "are ambiguous");
  EXPECT_VALUE_ERROR(rearrange(z(), "{B B} -> Z Z"), "more than once");
  EXPECT_VALUE_ERROR(rearrange(z(), "{(q) } -> (Z: Z Z)"), "must be bound by name");
  EXPECT_VALUE_ERROR(rearrange(z(), "{(Z: q) } -> (Z: Z Z)"), "Could not resolve");
}

TEST(RearrangePorted, DocumentationExamples) {
  EXPECT_EQ(rearrange(z(), "a b c d e -> a b c d e").axes(), (AxisSpec{B, D, H, W, C}));
  EXPECT_EQ(rearrange(z(), "a b c d e -> (M: a b) c d e").axes(), (AxisSpec{Axis("M", 10), H, W, C}));
  EXPECT_EQ(rearrange(zq(), "(q: b h) d w c -> b h d w c", {{"b", B}, {"h", "H"}}).axes(), (AxisSpec{B, H, D, W, C}));
  EXPECT_EQ(rearrange(z(), "a b ... -> b a ...").axes(), (AxisSpec{D, B, H, W, C}));
  EXPECT_EQ(rearrange(z(), "a b ... -> b ... a").axes(), (AxisSpec{D, H, W, C, B}));
  EXPECT_EQ(rearrange(z(), "a b c d ... -> (x: a b) (y: c d) ...").axes(), (AxisSpec{Axis("x", 10), Axis("y", 24), C}));
  EXPECT_EQ(rearrange(z(), "{B C W} -> ... B C W").axes(), (AxisSpec{D, H, B, C, W}));
  EXPECT_EQ(rearrange(zq(), "{(Q: b h) C} -> ... b C h", {{"b", B}, {"h", H}}).axes(), (AxisSpec{D, W, B, C, H}));
  EXPECT_EQ(rearrange(zq(), "{(Q: b h) (W: e f)} -> ... b e h f", {{"b", B}, {"h", H}, {"e", 2}}).axes(),
            (AxisSpec{D, C, B, Axis("e", 2), H, Axis("f", 2)}));
  EXPECT_EQ(rearrange(z(), "{H W C} -> ... (C: C H W)").axes(), (AxisSpec{B, D, Axis("C", 72)}));
  const Axis sH("H", 3), sW("W", 2);
  EXPECT_EQ(rearrange(z(), "{B (H: h1 h) (W: w1 w)} -> (B: B h1 w1) (H: h) (W: w) ...", {{"h1", 2}, {"w1", 2}}).axes(),
            (AxisSpec{Axis("B", 20), sH, sW, D, C}));
  EXPECT_EQ(rearrange(z(), "{B (H: h1 H) (W: w1 W)} -> (B: B h1 w1) H W ...", {{"h1", 2}, {"w1", 2}}).axes(),
            (AxisSpec{Axis("B", 20), sH, sW, D, C}));
  EXPECT_EQ(rearrange(z(), "{B (H: h1 h) (W: w1 w) C} -> (B: B h1 w1) ... (C: C h w) ", {{"h1", 2}, {"w1", 2}}).axes(),
            (AxisSpec{Axis("B", 20), D, Axis("C", 18)}));
  const Axis Embed("embed", 3 * 4 * 3);
  NamedArray attn(at::arange(36 * 6 * 4).reshape({36, 6, 4}), {Embed, H, W});
  EXPECT_EQ(rearrange(attn, "{(embed: qkv heads C) H W} -> qkv heads C (pos: H W)", {{"qkv", 3}, {"heads", 4}}).axes(),
            (AxisSpec{Axis("qkv", 3), Axis("heads", 4), C, Axis("pos", 24)}));
  EXPECT_EQ(
      rearrange(z(), "{B (H: h1 h) (W: w1 w) C} -> ... B (H: h) (W: w) (C: C h1 w1)", {{"h1", 2}, {"w1", 2}}).axes(),
      (AxisSpec{D, B, sH, sW, Axis("C", 12)}));
  EXPECT_EQ(rearrange(z(), "{B (H: h1 H) (W: w1 W) C} -> B ... H W (C: C h1 w1)", {{"h1", 2}, {"w1", 2}}).axes(),
            (AxisSpec{B, D, sH, sW, Axis("C", 12)}));
  EXPECT_EQ(rearrange(z(), "{ B (H: h1 H) (W: w1 W)} -> (B: B h1 w1) H W ...", {{"H", 2}, {"W", 2}}).axes(),
            (AxisSpec{Axis("B", 5 * 3 * 2), H.resize(2), W.resize(2), D, C}));
  EXPECT_EQ(rearrange(z(), "{ B (H: h1 H) (W: w1 W) D} -> (B: B h1 w1) (E: H W D)...", {{"H", 2}, {"W", 2}}).axes(),
            (AxisSpec{Axis("B", 5 * 3 * 2), Axis("E", 2 * 2 * 2), C}));
}

// Captures simplified as the original's test does: a plain name, a group "(a b)", or "{binding: a b}".
std::vector<std::string> simplify(const detail::Expression& e) {
  std::vector<std::string> out;
  for (const detail::Capture& c : e.captures) {
    if (c.ellipsis) {
      out.push_back("...");
    } else if (c.axes.size() == 1 && (!c.binding || *c.binding == c.axes[0])) {
      out.push_back(c.axes[0]);
    } else {
      std::string inner;
      for (const std::string& a : c.axes) inner += (inner.empty() ? "" : " ") + a;
      out.push_back(c.binding ? "{" + *c.binding + ": " + inner + "}" : "(" + inner + ")");
    }
  }
  return out;
}
using Names = std::vector<std::string>;

TEST(ParsingPorted, Rearrangement) {
  auto [lhs, rhs] = detail::parse_rearrangement("a b c d -> b c a d");
  EXPECT_TRUE(lhs.ordered && rhs.ordered);
  EXPECT_EQ(simplify(lhs), (Names{"a", "b", "c", "d"}));
  EXPECT_EQ(simplify(rhs), (Names{"b", "c", "a", "d"}));
  auto [l2, r2] = detail::parse_rearrangement("a ... c d -> b c a d");
  EXPECT_EQ(simplify(l2), (Names{"a", "...", "c", "d"}));
  auto [l3, r3] = detail::parse_rearrangement("a_longer b123 c d -> b123 c a_longer d");
  EXPECT_EQ(simplify(l3), (Names{"a_longer", "b123", "c", "d"}));
  EXPECT_EQ(simplify(r3), (Names{"b123", "c", "a_longer", "d"}));
}

TEST(ParsingPorted, Einsum) {
  auto [lhses, rhs] = detail::parse_einsum("a b c d, b c e f -> a d e f");
  ASSERT_EQ(lhses.size(), 2u);
  EXPECT_TRUE(lhses[0].ordered && lhses[1].ordered && rhs.ordered);
  EXPECT_EQ(simplify(lhses[0]), (Names{"a", "b", "c", "d"}));
  EXPECT_EQ(simplify(lhses[1]), (Names{"b", "c", "e", "f"}));
  EXPECT_EQ(simplify(rhs), (Names{"a", "d", "e", "f"}));
  auto [l2, r2] = detail::parse_einsum("... c h w, h w d -> ...  c d");
  EXPECT_EQ(simplify(l2[0]), (Names{"...", "c", "h", "w"}));
  EXPECT_EQ(simplify(r2), (Names{"...", "c", "d"}));
  auto [l3, r3] = detail::parse_einsum("{...} -> batch channel embed");
  ASSERT_EQ(l3.size(), 1u);
  EXPECT_FALSE(l3[0].ordered);
  EXPECT_EQ(simplify(l3[0]), (Names{"..."}));
  auto [l4, r4] = detail::parse_einsum("batch channel embed -> ");
  EXPECT_TRUE(l4[0].ordered);
  EXPECT_EQ(simplify(r4), Names{});
  auto [l5, r5] = detail::parse_einsum("batch channel embed, batch channel embed ->");
  EXPECT_EQ(l5.size(), 2u);
  auto [l6, r6] = detail::parse_einsum("{a, b} -> ");
  EXPECT_FALSE(l6[0].ordered);
  EXPECT_EQ(simplify(l6[0]), (Names{"a", "b"}));
  auto [l7, r7] = detail::parse_einsum("{h, w} -> ... channel embed");
  EXPECT_EQ(simplify(l7[0]), (Names{"h", "w"}));
  EXPECT_EQ(simplify(r7), (Names{"...", "channel", "embed"}));
}

TEST(ParsingPorted, GroupsUnorderedAndQuoted) {
  auto [l1, r1] = detail::parse_rearrangement("a (b c) d -> b c a d");
  EXPECT_EQ(simplify(l1), (Names{"a", "(b c)", "d"}));
  auto [l2, r2] = detail::parse_rearrangement("a (b: c) (d: e f) -> b c a d");
  EXPECT_EQ(simplify(l2), (Names{"a", "{b: c}", "{d: e f}"}));
  auto [l3, r3] = detail::parse_rearrangement("{a b c d} -> {b c a d}");
  EXPECT_FALSE(l3.ordered);
  EXPECT_FALSE(r3.ordered);
  auto [l4, r4] = detail::parse_rearrangement("{(c: a b) d e} -> (q: a d e) b");
  EXPECT_EQ(simplify(l4), (Names{"{c: a b}", "d", "e"}));
  EXPECT_EQ(simplify(r4), (Names{"{q: a d e}", "b"}));
  auto [l5, r5] = detail::parse_rearrangement("a \"b c\" d -> 'b c' a d");
  EXPECT_EQ(simplify(l5), (Names{"a", "b c", "d"}));
  EXPECT_EQ(simplify(r5), (Names{"b c", "a", "d"}));
  auto [l6, r6] = detail::parse_rearrangement("{a \"b c\" (d: 'hello')} -> b c a d");
  EXPECT_EQ(simplify(l6), (Names{"a", "b c", "{d: hello}"}));
}

TEST(ParsingPorted, Errors) {
  EXPECT_VALUE_ERROR(detail::parse_rearrangement("a b"), "Unexpected end of string");
  EXPECT_VALUE_ERROR(detail::parse_rearrangement("{ a -> c"), "Expected }");
  EXPECT_VALUE_ERROR(detail::parse_rearrangement("a } -> c"), "Unexpected }");
  EXPECT_VALUE_ERROR(detail::parse_rearrangement("(a: b } -> c"), "Unexpected }");
  EXPECT_VALUE_ERROR(detail::parse_rearrangement("(a b ! -> c d e"), "Unexpected character");
  EXPECT_VALUE_ERROR(detail::parse_rearrangement("a b ! -> c d e"), "Identifier expected");
}

}  // namespace
}  // namespace haliax
