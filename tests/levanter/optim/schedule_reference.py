# Reference values for tests/levanter/optim/test_schedule.cpp: Levanter's OptimizerConfig.lr_scheduler semantics
# (warmup / stable / decay per cycle, cooldown, optax's linear, cosine, constant schedules and join_schedules, and
# Levanter's inv_sqrt and inv), re-expressed in plain float64 Python. Run: python3 schedule_reference.py
import math
def conv(f, n):
    if f < 0 or (f > 1 and f % 1 != 0): raise ValueError(f)
    return int(f * n) if f <= 1.0 else int(f)
def linear(i, e, T):
    if T <= 0: return lambda c: i
    return lambda c: (i - e) * (1 - min(max(c, 0), T) / T) + e
def const(v): return lambda c: v
def cosine(v, T, alpha, exp=1.0):
    if not T > 0: raise ValueError("cos")
    def f(c):
        c = min(c, T); cd = 0.5 * (1 + math.cos(math.pi * c / T)); return v * ((1 - alpha) * cd ** exp + alpha)
    return f
def inv_sqrt(lr, mn, w, ts=10000):
    return lambda c: max(lr * min(1.0, 1.0 / math.sqrt(max(c + w, 1) / ts)), mn)
def inv(lr, mn, T):
    return lambda c: max(lr * min(1.0, 1.0 / ((lr / mn - 1) * max(c, 1) / T + 1)), mn)
def sched(N, lr=6e-4, min_lr_ratio=0.1, warmup=0.01, decay=None, rewarmup=0.0, cooldown=None, cycles=None, cycle_length=None, kind="cosine", exp=1.0):
    cd = conv(cooldown, N) if cooldown is not None else 0
    tot = N - cd
    if cycle_length is not None:
        if isinstance(cycle_length, list):
            import numpy as np; pts = np.cumsum(cycle_length).tolist()
        else:
            cl = conv(cycle_length, tot); pts = [i * cl for i in range(1, tot // cl)]
    elif isinstance(cycles, int): pts = [int(tot / cycles * (i + 1)) for i in range(cycles - 1)]
    elif isinstance(cycles, list): pts = list(cycles)
    else: pts = []
    pts.insert(0, 0)
    if pts[-1] != tot: pts.append(tot)
    mn = lr * min_lr_ratio
    S, B = [], []; prev = 0.0
    for cyc, (s, e) in enumerate(zip(pts[:-1], pts[1:])):
        cs = e - s
        w = conv(warmup, cs) if cyc == 0 else conv(rewarmup, cs)
        if w != 0: S.append(linear(prev, lr, w)); B.append(s + w)
        d = conv(decay, cs) if decay is not None else cs - w
        st = cs - w - d
        if st != 0: S.append(const(lr)); B.append(s + w + st)
        f = {"constant": lambda: const(lr), "cosine": lambda: cosine(lr, d, min_lr_ratio, exp), "linear": lambda: linear(lr, mn, d),
             "inv_sqrt": lambda: inv_sqrt(lr, mn, w), "inv": lambda: inv(lr, mn, d)}[kind]()
        prev = f(d); S.append(f); B.append(e)
    if cd != 0: S.append(linear(f(d), mn, cd))
    def out(step):
        o = S[0](step)
        for b, sc in zip(B, S[1:]):
            if not step < b: o = sc(step - b)
        return o
    return out
cases = {
 "default_1000": (dict(N=1000), [0, 1, 5, 10, 11, 500, 999, 1000, 1200]),
 "wsd": (dict(N=100, lr=1e-3, warmup=10, decay=0.2), [0, 3, 10, 50, 79, 80, 85, 90, 99, 100]),
 "linear": (dict(N=50, lr=2e-3, warmup=0.1, kind="linear", min_lr_ratio=0.0), [0, 4, 5, 6, 30, 49, 50]),
 "cycles": (dict(N=100, lr=1e-3, warmup=0.1, rewarmup=0.2, cycles=2), [0, 4, 5, 30, 49, 50, 55, 60, 61, 99, 100]),
 "cooldown": (dict(N=100, lr=1e-3, warmup=0.1, cooldown=0.2, kind="linear"), [0, 10, 50, 79, 80, 90, 100]),
 "inv_sqrt": (dict(N=100000, lr=1e-3, warmup=1000, kind="inv_sqrt"), [0, 500, 1000, 9000, 20000, 99999]),
 "inv": (dict(N=1000, lr=1e-3, warmup=0.0, kind="inv"), [0, 1, 2, 100, 999, 1000]),
 "cosine_exp2": (dict(N=200, lr=1e-3, warmup=0.05, exp=2.0), [0, 10, 60, 150, 200]),
 "cycle_length": (dict(N=90, lr=1e-3, warmup=0.1, rewarmup=0.1, cycle_length=30), [0, 3, 29, 30, 33, 60, 62, 89]),
}
for name, (kw, steps) in cases.items():
    f = sched(**kw)
    print(name, ", ".join("{%d, %.17g}" % (s, f(s)) for s in steps))
