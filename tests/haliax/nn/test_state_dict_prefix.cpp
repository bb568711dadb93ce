// State dicts with a prefix, as Haliax's to_state_dict(tree, prefix) / from_state_dict(tree, dict, prefix): keys
// are "prefix.path", loading reads only keys under the prefix and ignores the rest. Under the prefix we stay
// strict (an unknown key is an error) where Haliax ignores it. Expected values: reference/gen_port.py.
#include "../testing.h"
#include "haliax/reference.h"
#include "haliax/reference/port_expected.inc"

namespace haliax {
namespace {

using testing::expect_matches_ref;
using testing::ref_to_named;
namespace ref = haliax_ref::port;

const Axis In("in", 3), Out("out", 2), Layer("layer", 2);

nn::Linear arange_linear() {
  nn::Linear lin = nn::Linear::init({In}, {Out}, random::Key(0), nn::LinearOptions().set_dtype(at::kDouble));
  lin.weight = NamedArray(at::arange(6, at::kDouble).reshape({2, 3}), {Out, In});
  lin.bias = NamedArray(at::arange(2, at::kDouble) - 1.0, {Out});
  return lin;
}

std::vector<std::string> keys_of(const StateDict& sd) {
  std::vector<std::string> keys;
  for (const auto& [k, t] : sd) keys.push_back(k);
  return keys;
}

TEST(StateDictPrefix, KeysArePrefixDotPath) {
  nn::Linear lin = arange_linear();
  StateDict sd = nn::to_state_dict(lin, "enc.proj");
  EXPECT_EQ(keys_of(sd), (std::vector<std::string>{"enc.proj.weight", "enc.proj.bias"}));
  // Haliax's state dict holds bare arrays (no axis names): compare the values.
  EXPECT_TRUE(at::equal(sd[0].second.reshape({-1}), at::tensor(ref::sd_prefix_weight.values, at::kDouble)));
  EXPECT_TRUE(at::equal(sd[1].second, at::tensor(ref::sd_prefix_bias.values, at::kDouble)));
  // An empty prefix is the plain form.
  EXPECT_EQ(keys_of(nn::to_state_dict(lin, "")), keys_of(nn::to_state_dict(lin)));
  EXPECT_EQ(with_prefix("", "weight"), "weight");
  EXPECT_EQ(with_prefix("enc", ""), "enc");
  EXPECT_EQ(with_prefix("enc", "weight"), "enc.weight");
}

TEST(StateDictPrefix, LoadReadsOnlyKeysUnderThePrefix) {
  nn::Linear lin = arange_linear();
  StateDict full;
  for (auto& [k, t] : nn::to_state_dict(lin, "enc.proj")) full.emplace_back(k, t * 2);
  full.emplace_back("dec.weight", at::zeros({7}));
  full.emplace_back("encoder.proj.weight", at::zeros({2, 3}));  // shares the prefix's letters, not the prefix
  nn::Linear target = nn::Linear::init({In}, {Out}, random::Key(5), nn::LinearOptions().set_dtype(at::kDouble));
  nn::from_state_dict(target, full, "enc.proj");
  expect_matches_ref(target.weight, ref::sd_loaded_weight);
  // Strict under the prefix: Haliax would ignore "enc.proj.extra"; we name it.
  StateDict extra = full;
  extra.emplace_back("enc.proj.extra", at::zeros({1}));
  EXPECT_VALUE_ERROR(nn::from_state_dict(target, extra, "enc.proj"), "unexpected key 'enc.proj.extra'");
  // A missing key is an error in both (Haliax: KeyError 'enc.proj.bias').
  EXPECT_EQ(ref::sd_missing_key.message, "'enc.proj.bias'");
  StateDict missing{full[0]};
  EXPECT_VALUE_ERROR(nn::from_state_dict(target, missing, "enc.proj"), "State dict is missing key 'enc.proj.bias'");
  // Without the prefix the same dict is rejected: its keys are not the module's paths.
  EXPECT_VALUE_ERROR(nn::from_state_dict(target, full), "missing key 'weight'");
}

TEST(StateDictPrefix, StackedLayersUnstackUnderThePrefix) {
  auto stacked = nn::Stacked<nn::Linear>::init(Layer, random::Key(1), [](const random::Key& k) {
    return nn::Linear::init({In}, {Out}, k, nn::LinearOptions().set_use_bias(false).set_dtype(at::kDouble));
  });
  // Haliax's per-layer keys (its init draws differ from ours; the values are set from its recorded weights).
  stacked.stacked.weight = ref_to_named(ref::sd_stacked_all);
  StateDict sd = nn::to_state_dict(stacked, "h");
  EXPECT_EQ(keys_of(sd), (std::vector<std::string>{"h.0.weight", "h.1.weight"}));
  EXPECT_TRUE(at::allclose(sd[1].second.reshape({-1}), at::tensor(ref::sd_stacked_layer1.values, at::kDouble)));
  auto other = nn::Stacked<nn::Linear>::init(Layer, random::Key(2), [](const random::Key& k) {
    return nn::Linear::init({In}, {Out}, k, nn::LinearOptions().set_use_bias(false).set_dtype(at::kDouble));
  });
  StateDict with_others = sd;
  with_others.emplace_back("wte.weight", at::zeros({3}));
  nn::from_state_dict(other, with_others, "h");
  EXPECT_TRUE(array_equal(other.stacked.weight, stacked.stacked.weight));
}

}  // namespace
}  // namespace haliax
