# Expected values for tests/haliax/test_nan_reductions.cpp: NaN-ignoring reductions in all their forms (all
# axes, one axis, several, `where`), their gradients, max/min with a `where` mask (Haliax always raises: no
# `initial`), any/all, var's NaN when no degrees of freedom are left. Run through scripts/haliax_ref_env --regenerate.
import jax

from emit import Emitter, hax, jnp

em = Emitter("reductions")
nan = jnp.nan
B, C, D = hax.Axis("b", 2), hax.Axis("c", 3), hax.Axis("d", 2)
# (b, c, d) with NaNs scattered, and the slice b=1, c=2 all NaN over d; a tie (4, 4) for max/argmax.
x = em.array(
    "x",
    hax.named(
        jnp.array(
            [
                [[1.0, nan], [-2.0, 3.0], [4.0, 4.0]],
                [[nan, 0.5], [2.0, -1.0], [nan, nan]],
            ]
        ),
        (B, C, D),
    ),
)
w = em.array("w", hax.named(jnp.array([[True, False], [True, True], [False, True]]), (C, D)))

for name in ["nansum", "nanmean", "nanmax", "nanmin", "nanprod", "nanvar", "nanstd"]:
    fn = getattr(hax, name)
    em.array(f"{name}_all", fn(x))
    em.array(f"{name}_d", fn(x, D))
    em.array(f"{name}_bd", fn(x, (B, D)))
    em.array(f"{name}_c_names", fn(x, ("c",)))
for name in ["nansum", "nanmean", "nanprod", "nanvar", "nanstd"]:
    fn = getattr(hax, name)
    em.array(f"{name}_d_where", fn(x, D, where=w))
    em.array(f"{name}_all_where", fn(x, where=w))
em.array("nanvar_d_ddof1", hax.nanvar(x, D, ddof=1))
em.array("nanstd_c_ddof1", hax.nanstd(x, C, ddof=1))
em.array("nanargmax_d", hax.nanargmax(x, D))
em.array("nanargmin_c", hax.nanargmin(x, C))
em.array("nanargmax_all", hax.nanargmax(x))
em.array("nancumsum_c", hax.nancumsum(x, C))
em.array("nancumprod_d", hax.nancumprod(x, D))

# Gradients (JAX's) of the sum of each result: NaN positions get zero.
def grad_of(fn):
    return hax.named(jax.grad(lambda a: jnp.sum(fn(hax.named(a, x.axes)).array))(x.array), x.axes)


em.array("grad_nansum_d", grad_of(lambda a: hax.nansum(a, D)))
em.array("grad_nanmean_c", grad_of(lambda a: hax.nanmean(a, C)))
em.array("grad_nanvar_bd", grad_of(lambda a: hax.nanvar(a, (B, D))))
em.array("grad_nanmax_d", grad_of(lambda a: hax.nanmax(a, D)))
em.array("grad_nanmin_all", grad_of(lambda a: hax.nanmin(a)))
em.array("grad_nanprod_c", grad_of(lambda a: hax.nanprod(a, C)))

# max/min (and nanmax/nanmin) have no identity: a where mask always raises in Haliax, masked slice or not.
y = em.array("y", hax.named(jnp.arange(6.0).reshape(2, 3), ("b", "c")))
yw = y > 2
em.error("max_where", lambda: hax.max(y, "c", where=yw))
em.error("min_where", lambda: hax.min(y, where=yw))
em.error("nanmax_where", lambda: hax.nanmax(y, "c", where=yw))
em.error("nanmin_where", lambda: hax.nanmin(y, "b", where=y > -1))
# What `initial` means in jnp (Haliax does not forward it): max(initial, max over unmasked).
em.array("jnp_max_where_initial", hax.named(jnp.max(y.array, axis=1, where=yw.array, initial=3.5), ("b",)))
em.array("jnp_min_where_initial", hax.named(jnp.min(y.array, axis=0, where=yw.array, initial=4.5), ("c",)))

# any/all, with a mask: masked elements count as False for any, True for all
em.array("any_c", hax.any(y > 3, "c"))
em.array("all_c", hax.all(y > 0, "c"))
em.array("all_c_where", hax.all(y > 3, "c", where=yw))
em.array("any_all_where", hax.any(y > 4, where=y < 4))
em.array("all_empty_where", hax.all(y > 100, "c", where=y > 100))

# mean over an all-masked slice is NaN; var with ddof >= count is NaN
em.array("mean_all_masked", hax.mean(y, "c", where=y > 2.5))
em.array("var_ddof_too_big", hax.var(y, "b", ddof=2))
em.array("var_where_ddof1", hax.var(y, "c", where=yw, ddof=1))

em.write()
