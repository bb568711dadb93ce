# Expected values for tests/haliax/test_hof.cpp and tests/haliax/nn/test_stacked_scan.cpp: Haliax's scan, fold,
# map, vmap and Stacked.scan on small float64 inputs, and the errors they raise. Run through
# scripts/haliax_ref_env --regenerate.
import equinox as eqx
import jax
from emit import Emitter, hax, jnp

em = Emitter("hof")
Y, X, B = hax.Axis("y", 2), hax.Axis("x", 4), hax.Axis("b", 3)
key = jax.random.PRNGKey(0)
k1, k2, k3, k4 = jax.random.split(key, 4)

# x's scanned axis is not its first: the outputs must get it first.
x = em.array("x", hax.random.normal(k1, (Y, X)).astype(jnp.float64))
w = em.array("w", hax.random.normal(k2, (Y,)).astype(jnp.float64))
init = em.array("init", hax.random.normal(k3, (Y,)).astype(jnp.float64))
xb = em.array("xb", hax.random.normal(k4, (B, Y, X)).astype(jnp.float64))


# Cumulative sum: the carry is the running sum, each step outputs it.
def cumsum_step(c, xi):
    c = c + xi
    return c, c


carry, ys = hax.scan(cumsum_step, X)(init, x)
em.array("cumsum_carry", carry)
em.array("cumsum_ys", ys)
carry, ys = hax.scan(cumsum_step, "x", reverse=True)(init, x)
em.array("cumsum_rev_carry", carry)
em.array("cumsum_rev_ys", ys)


# Cumulative product with a passed-through argument (w has no x axis) and a tuple output.
def cumprod_step(c, xi, wi):
    c = c * xi + wi
    return c, (c, hax.sum(c * wi))


carry, (ys, dots) = hax.scan(cumprod_step, "x")(init, x, w)
em.array("cumprod_carry", carry)
em.array("cumprod_ys", ys)
em.array("cumprod_dots", dots)

# fold: the carry only; reversed order matters for a non-commutative step.
em.array("fold_sum", hax.fold(lambda c, xi: c + xi * w, X)(init, x))
em.array("fold_rev", hax.fold(lambda c, xi: c * 0.5 + xi, "x", reverse=True)(init, x))
# An Axis that no input has: a fixed number of steps.
em.array("fold_steps", hax.fold(lambda c: c * 2.0 + 1.0, hax.Axis("n", 3))(init))

# map: one argument; outputs stacked with x first.
em.array("map_sq", hax.map(lambda u: u * u + 1.0, X)(x))
em.array("map_rev", hax.map(lambda u: hax.sum(u), "x", reverse=True)(x))

# vmap: arguments without the axis pass through; outputs get the axis first.
em.array("vmap_one", hax.vmap(lambda u, v: u * v + 1.0, "x")(x, w))
em.array("vmap_xb", hax.vmap(lambda u: hax.sum(u, Y), (X, B))(xb))
em.array("vmap_bx", hax.vmap(lambda u: hax.sum(u, Y), (B, X))(xb))
em.array("vmap_unmapped", hax.vmap(lambda v: v * 2.0, hax.Axis("z", 2))(w))


# Errors. f takes *xs so that Haliax names the inputs xs[0], xs[1], ... as our scan does.
def scan_f(c, *xs):
    return c, c


x5 = hax.zeros((Y, X.resize(5)), dtype=jnp.float64)
em.error("scan_mismatch", lambda: hax.scan(scan_f, "x")(init, x, x5))
em.error("scan_mismatch_nested", lambda: hax.scan(scan_f, "x")(init, w, (x, x5)))
em.error("fold_mismatch", lambda: hax.fold(lambda c, *a: c, "x")(init, x, x5))
em.error("map_mismatch", lambda: hax.map(lambda u: u[0], "x")((x, x5)))
em.error("vmap_missing", lambda: hax.vmap(lambda v: v, "x")(w))
em.error("vmap_mismatch", lambda: hax.vmap(lambda u, v: u, "x")(x, x5))
em.error("vmap_axis_size", lambda: hax.vmap(lambda u: u, X.resize(3))(x))


# Stacked.scan over a tiny block: the carry goes through every layer, each layer's output is stacked on Layers.
class Block(eqx.Module):
    weight: hax.NamedArray

    def __call__(self, c):
        nxt = hax.tanh(c * self.weight) + c
        return nxt, nxt * 2.0

    @staticmethod
    def init(weight):
        return Block(weight)


Layers = hax.Axis("layers", 3)
weight = em.array("stacked_weight", hax.random.normal(jax.random.PRNGKey(7), (Layers, Y)).astype(jnp.float64))
stacked = hax.nn.Stacked.init(Layers, Block)(weight=weight)
carry, ys = stacked.scan(init)
em.array("stacked_carry", carry)
em.array("stacked_ys", ys)
em.write()
