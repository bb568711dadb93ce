# Expected values for the ported Haliax tests (tests/haliax/test_einsum_ordered.cpp, test_ported_*.cpp,
# nn/test_ported_nn.cpp, nn/test_state_dict_prefix.cpp): semantics where our first version differed from the
# original, and the cases of the original's own test suite whose answers are values. Run through scripts/haliax_ref_env --regenerate.
import jax
import numpy as np

from emit import Emitter, hax, jnp

em = Emitter("port")

# --- ordered einsum with "..." on the output side -------------------------------------------------------------
B, H, W, D = hax.Axis("b", 2), hax.Axis("h", 3), hax.Axis("w", 2), hax.Axis("d", 4)
x = em.array("ein_x", hax.arange((B, H, W, D)).astype(jnp.float64) / 7.0 - 1.0)
em.array("ein_b_d_swap", hax.einsum("b ... d -> d ... b", x))
em.array("ein_b_first_d_mid", hax.einsum("b ... d -> ... b d", x))
em.array("ein_b_last", hax.einsum("b ... -> ... b", x))
em.array("ein_ell_first_then_d", hax.einsum("... d -> d ...", x))
E = hax.Axis("e", 3)
y = em.array("ein_y", hax.arange((D, E)).astype(jnp.float64) / 5.0 - 0.5)
em.array("ein_contract_d_put_e_first", hax.einsum("b ... d, d e -> e ... b", x, y))
em.array("ein_contract_d_e_middle", hax.einsum("b ... d, d e -> b e ...", x, y))
em.array("ein_contract_d_all_ell", hax.einsum("b ... d, d e -> ...", x, y))
Bq, S, T, Hd, Dh = hax.make_axes(batch=2, seq_q=3, seq_k=2, head=2, dhead=2)
q = em.array("ein_q", hax.arange((Bq, S, Hd, Dh)).astype(jnp.float64) / 10.0)
k = em.array("ein_k", hax.arange((Bq, T, Hd, Dh)).astype(jnp.float64) / 9.0 - 0.3)
em.array("ein_qk", hax.einsum("... s h d, ... t h d -> ... s t h d", q, k))
em.array("ein_qk_scores", hax.einsum("... s h d, ... t h d -> ... h s t", q, k))
# output-only and unordered forms with "..." in the middle
em.array("ein_out_only_mid", hax.einsum("-> d ... w", x, y))
em.array("ein_unordered_mid", hax.einsum("{d h} -> d ... h", x, y))
em.error("ein_unused_kwargs", lambda: hax.einsum("-> h w", x, Q=hax.Axis("Q", 2)))
em.error("ein_positional_unused_kwargs", lambda: hax.einsum("b h w d -> d", x, zz=hax.Axis("zz", 2)))
em.error("ein_alias_size_mismatch", lambda: hax.einsum("-> hh w", x, hh=H.resize(4)))

# --- one_hot: scalars and out-of-range ids ---------------------------------------------------------------------
C = hax.Axis("c", 4)
for v in (0, 3, -1, -4):
    em.array(f"one_hot_int_{'m' if v < 0 else ''}{abs(v)}", hax.nn.one_hot(v, C))
for v in (2, -1, -4, -5, 4, 7):
    em.array(f"one_hot_0d_{'m' if v < 0 else ''}{abs(v)}", hax.nn.one_hot(jnp.array(v, dtype=jnp.int32), C))
I = hax.Axis("i", 5)
ids = em.array("one_hot_ids", hax.named(jnp.array([-5, -1, 0, 3, 4]), I))
em.array("one_hot_named", hax.nn.one_hot(ids, C))
em.array("one_hot_0d_named_m1", hax.nn.one_hot(hax.named(jnp.array(-1), ()), C))
em.array("one_hot_bool_0d", hax.nn.one_hot(jnp.array(True), C))
em.error("one_hot_int_too_big", lambda: hax.nn.one_hot(4, C))
em.error("one_hot_int_too_small", lambda: hax.nn.one_hot(-5, C))
em.error("one_hot_float_scalar", lambda: hax.nn.one_hot(jnp.array(1.0), C))
em.error("one_hot_vector_array", lambda: hax.nn.one_hot(jnp.array([1, 2]), C))

# --- losses: where, weight, reduction axis -----------------------------------------------------------------------
Bt, Ps, L = hax.make_axes(batch=2, pos=3, label=4)
logits = em.array("loss_logits", hax.arange((Bt, Ps, L)).astype(jnp.float64) / 3.0 - 2.0 + hax.sin(hax.arange((Bt, Ps, L)).astype(jnp.float64)))
tid = em.array("loss_target_ids", hax.named(jnp.array([[0, 3, 1], [2, 2, 0]]), (Bt, Ps)))
targets = hax.nn.one_hot(tid, L, dtype=jnp.float64)
mask = em.array("loss_where", hax.named(jnp.array([[True, False, True], [False, False, True]]), (Bt, Ps)))
none_mask = em.array("loss_where_none", hax.named(jnp.zeros((2, 3), dtype=bool), (Bt, Ps)))
wt = em.array("loss_weight", hax.named(jnp.array([[1.0, 0.0, 2.0], [0.5, 1.5, 0.0]]), (Bt, Ps)))
ce = hax.nn.cross_entropy_loss
em.array("ce_mean", ce(logits, L, targets))
em.array("ce_sum", ce(logits, L, targets, reduction=hax.sum))
em.array("ce_none", ce(logits, L, targets, reduction=None))
em.array("ce_where_mean", ce(logits, L, targets, where=mask))
em.array("ce_where_none", ce(logits, L, targets, reduction=None, where=mask))
em.array("ce_where_mean_pos", ce(logits, L, targets, where=mask, reduction_axis=Ps))
em.array("ce_all_masked_mean", ce(logits, L, targets, where=none_mask))
em.array("ce_weight_mean", ce(logits, L, targets, weight=wt))
em.array("ce_weight_sum", ce(logits, L, targets, reduction=hax.sum, weight=wt))
em.array("ce_weight_where_mean_pos", ce(logits, L, targets, weight=wt, where=mask, reduction_axis=Ps))
em.array("ce_weight_none", ce(logits, L, targets, reduction=None, weight=wt))
em.array("ce_empty_axis", ce(logits, L, targets, reduction_axis=(), weight=wt))
bl = em.array("bce_logits", hax.arange((Bt, Ps)).astype(jnp.float64) - 2.5)
bt = em.array("bce_targets", hax.named(jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.25]]), (Bt, Ps)))
em.array("bce_mean", hax.nn.binary_cross_entropy_loss(bl, bt))
em.array("bce_weight_where_sum", hax.nn.binary_cross_entropy_loss(bl, bt, reduction=hax.sum, where=mask, weight=wt))
em.array("bce_where_mean_batch", hax.nn.binary_cross_entropy_loss(bl, bt, where=mask, reduction_axis=Bt))

# --- standardize, softmax over everything, activations -------------------------------------------------------------
sb, sc = hax.make_axes(b=2, c=3)
sx = em.array("std_x", hax.named(jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 9.0]]), (sb, sc)))
smask = em.array("std_where", hax.named(jnp.array([True, False, True]), (sc,)))
em.array("std_c", hax.nn.standardize(sx, sc))
em.array("std_b_where", hax.nn.standardize(sx, sb, where=smask))
em.array("std_c_where", hax.nn.standardize(sx, sc, where=smask))
em.array("std_given", hax.nn.standardize(sx, sc, mean=hax.mean(sx, sc), variance=hax.var(sx, sc) + 1.0, epsilon=0.1))
em.array("softmax_all", hax.nn.softmax(sx))
em.array("log_softmax_all", hax.nn.log_softmax(sx))
A = hax.Axis("a", 9)
ax = em.array("act_x", hax.named(jnp.linspace(-4.0, 4.0, 9), A))
for name in ("soft_sign", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh", "celu", "selu", "relu_squared",
             "elu", "leaky_relu", "relu6", "softplus", "log_sigmoid", "quick_gelu"):
    em.array(f"act_{name}", getattr(hax.nn, name)(ax))
G = hax.Axis("g", 4)
gx = em.array("glu_x", hax.arange((sb, G)).astype(jnp.float64) / 4.0 - 1.0)
em.error("glu_named", lambda: hax.nn.glu(gx, G))
em.array("glu_raw", jax.nn.glu(gx.array, 1))

# --- attention helpers ------------------------------------------------------------------------------------------
Hs, Kp, Qp = hax.make_axes(heads=6, kpos=5, qpos=4)
em.array("alibi_6", hax.nn.attention.alibi_attention_bias(Hs, Kp))
em.array("alibi_16", hax.nn.attention.alibi_attention_bias(hax.Axis("heads", 16), hax.Axis("kpos", 2)))
em.array("alibi_4_bias_max_4", hax.nn.attention.alibi_attention_bias(hax.Axis("heads", 4), Kp, bias_max=4))
em.array("prefix_lm", hax.nn.attention.prefix_lm_mask(Qp, Kp, 2))
em.array("prefix_lm_start", hax.nn.attention.prefix_lm_mask(Qp, Kp, 2, q_start=1))
em.array("causal_start", hax.nn.attention.causal_mask(Qp, Kp, q_start=1, k_start=0))
FK = hax.Axis("kpos", 24)
em.array("fcm_fixed", hax.nn.attention.forgetful_causal_mask(FK, 0.6, sample_prob=False, key=jax.random.PRNGKey(0)))
em.array("fcm_sampled", hax.nn.attention.forgetful_causal_mask(FK, 0.9, sample_prob=True, key=jax.random.PRNGKey(3)))
em.array("fcm_zero", hax.nn.attention.forgetful_causal_mask(FK, 0.0, key=jax.random.PRNGKey(0)))
em.array("fcm_one", hax.nn.attention.forgetful_causal_mask(FK, 1.0, key=jax.random.PRNGKey(0)))
# the original's test: the alibi bias makes later keys heavier
NH, KP, Hid = hax.Axis("heads", 1), hax.Axis("kpos", 20), hax.Axis("hid", 8)
bias = hax.nn.attention.alibi_attention_bias(NH, KP)
em.array("alibi_weights", hax.nn.attention.dot_product_attention_weights(Hid, KP, hax.ones((NH, Hid)), hax.ones((KP, NH, Hid)), bias=bias))
em.array("mask_to_bias", hax.nn.attention.mask_to_bias(hax.named(jnp.array([True, False]), "kpos"), -1e9))

# --- dot with out_axes (test_dot.py) --------------------------------------------------------------------------
Hh, Ww, Dd = hax.make_axes(Height=2, Width=3, Depth=4)
m1 = em.array("dot_m1", hax.arange((Hh, Ww, Dd)).astype(jnp.float64) / 10.0)
m2 = em.array("dot_m2", hax.arange((Dd, Ww, Hh)).astype(jnp.float64) / 7.0 - 1.0)
em.array("dot_h_w_first", hax.dot(m1, m2, axis=Hh, out_axes=(Ww, ...)))
em.array("dot_h_d_first", hax.dot(m1, m2, axis=Hh, out_axes=(Dd, ...)))
em.array("dot_none_d_h_first", hax.dot(m1, m2, axis=(), out_axes=(Dd, Hh, ...)))
em.array("dot_none_d_h_last", hax.dot(m1, m2, axis=(), out_axes=(..., Dd, Hh)))
em.array("dot_none_d_mid", hax.dot(m1, m2, axis=(), out_axes=(..., Dd, ...)))
em.array("dot_none_d_h_mid", hax.dot(m1, m2, axis=(), out_axes=(..., Dd, Hh, ...)))
em.array("dot_all", hax.dot(m1, m2, axis=None))
em.error("dot_size_mismatch", lambda: hax.dot(m1, hax.ones((Dd, Ww, Hh.resize(4))), axis="Height"))

# --- random: shapes of the distributions, values where JAX's are ours bit for bit --------------------------------
RB, RC = hax.make_axes(rb=3, rc=4)
key = jax.random.PRNGKey(42)
em.array("rand_uniform_f64", hax.random.uniform(key, (RB, RC), dtype=jnp.float64, minval=-1.0, maxval=2.0))
em.array("rand_randint", hax.random.randint(key, (RB, RC), 3, 17))
em.array("rand_bernoulli", hax.random.bernoulli(key, (RB, RC), 0.3))
em.array("rand_permutation_rc", hax.random.permutation(key, hax.arange((RB, RC)), RC))
em.array("rand_fold_in_uniform", hax.random.uniform(jax.random.fold_in(key, 7), (RB,), dtype=jnp.float64))
# test_random.py's axes (Height, Width) and key 0
Height, Width, Digit = hax.Axis("Height", 4), hax.Axis("Width", 8), hax.Axis("Digit", 10)
k0 = jax.random.PRNGKey(0)
em.array("rand_uniform_bounds", hax.random.uniform(k0, (Height, Width), dtype=jnp.float64, minval=-3.0, maxval=0.5))
em.array("rand_randint_0_10", hax.random.randint(k0, (Height, Width), 0, 10))
# A Python-float p draws in JAX's default float: f32 unless x64 is on. Ours is f32, so record these without x64.
with jax.enable_x64(False):
    em.array("rand_bernoulli_half", hax.random.bernoulli(k0, (Height, Width), 0.5))
    em.array("rand_rademacher", hax.random.rademacher(k0, (Height, Width), dtype=jnp.float32))
em.array("rand_bernoulli_half_x64", hax.random.bernoulli(k0, (Height, Width), 0.5))
prob = em.array("rand_bernoulli_p", hax.arange(Width, step=0.1).astype(jnp.float64))
em.array("rand_bernoulli_p_width", hax.random.bernoulli(k0, (Height, Width), prob))
for name in ("normal", "exponential", "laplace", "logistic", "cauchy", "gumbel"):
    em.array(f"rand_{name}_f64", getattr(hax.random, name)(k0, (Height, Width), dtype=jnp.float64))
    em.array(f"rand_{name}_f32", getattr(hax.random, name)(k0, (Height, Width), dtype=jnp.float32))
data = em.array("rand_perm_data", hax.random.uniform(k0, (Width, Height), dtype=jnp.float64))
em.array("rand_perm_height", hax.random.permutation(k0, data, Height))
em.array("rand_perm_width", hax.random.permutation(k0, data, Width))
logits = em.array("rand_cat_logits", hax.random.uniform(k0, (Height, Width, Digit), dtype=jnp.float64))
em.array("rand_categorical", hax.random.categorical(k0, logits, Digit))
em.array("rand_categorical_digit_first", hax.random.categorical(k0, logits.rearrange((Digit, Height, Width)), Digit))
em.array("rand_truncated_normal", hax.random.truncated_normal(k0, (Height, Width), -1.0, 0.5, dtype=jnp.float64))

# --- state dicts with a prefix (test_state_dict.py) -------------------------------------------------------------
import equinox as eqx  # noqa: E402
from haliax.state_dict import from_state_dict, to_state_dict  # noqa: E402

In, Out, Ly = hax.Axis("in", 3), hax.Axis("out", 2), hax.Axis("layer", 2)
lin = hax.nn.Linear.init(In, Out, key=jax.random.PRNGKey(0), use_bias=True, out_first=True)
lin = eqx.tree_at(lambda m: (m.weight, m.bias), lin,
                  (hax.arange((Out, In)).astype(jnp.float64), hax.arange((Out,)).astype(jnp.float64) - 1.0))
sd = to_state_dict(lin, prefix="enc.proj")
# the keys are exactly "prefix.path": these lookups raise if they are not
em.array("sd_prefix_weight", sd["enc.proj.weight"])
em.array("sd_prefix_bias", sd["enc.proj.bias"])
assert sorted(sd) == ["enc.proj.bias", "enc.proj.weight"], sorted(sd)
# keys outside the prefix (and extra ones under it) are ignored on load
full = {**sd, "dec.weight": np.zeros((7,)), "enc.proj.extra": np.zeros((1,)), "encoder.proj.weight": np.zeros((2, 3))}
loaded = from_state_dict(lin, {k: (v * 2 if k.startswith("enc.proj.") and k != "enc.proj.extra" else v) for k, v in full.items()}, prefix="enc.proj")
em.array("sd_loaded_weight", loaded.weight)
em.error("sd_missing_key", lambda: from_state_dict(lin, {"enc.proj.weight": sd["enc.proj.weight"]}, prefix="enc.proj"))
stacked = hax.nn.Stacked.init(Ly, hax.nn.Linear)(In, Out, key=jax.random.split(jax.random.PRNGKey(1), 2), use_bias=False)
ssd = to_state_dict(stacked, prefix="h")
assert sorted(ssd) == ["h.0.weight", "h.1.weight"], sorted(ssd)
em.array("sd_stacked_layer1", ssd["h.1.weight"])
em.array("sd_stacked_all", stacked.stacked.weight)

em.write()
