# scipy reference for `scalelab fit --method a3` on the 240 Chinchilla points: the same
# objective (sum of Huber_1e-3 on log L, log Lhat = LSE(a - alpha ln N, b - beta ln D, e)),
# the same 4,500-start grid, analytic gradients, L-BFGS-B; best start kept (|a|,|b|,|e| < 700).
import csv, sys, time
t0 = time.time()
import numpy as np
from scipy.optimize import minimize
rows = list(csv.DictReader(open(sys.argv[1])))
N = np.array([float(r["Model Size"]) for r in rows]); C = np.array([float(r["Training FLOP"]) for r in rows])
L = np.array([float(r["loss"]) for r in rows]); D = C / (6 * N)
cut = np.sort(L)[::-1][4]; keep = L < cut          # --drop-top 5
lnN, lnD, lnL = np.log(N[keep]), np.log(D[keep]), np.log(L[keep])
delta = 1e-3
MODE = sys.argv[2] if len(sys.argv) > 2 else "huber"   # huber | sse | huber-numgrad
def f(x):
    a, b, e, al, be = x
    t = np.stack([a - al * lnN, b - be * lnD, np.full_like(lnN, e)])
    m = t.max(0); w = np.exp(t - m); s = w.sum(0); pred = m + np.log(s); w /= s
    if MODE == "sse":
        lh = np.exp(pred); res = lh - np.exp(lnL); val = (res * res).sum(); g = 2 * res * lh
    else:
        r = pred - lnL; ar = np.abs(r)
        val = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)).sum()
        g = np.clip(r, -delta, delta)
    return val, np.array([(g * w[0]).sum(), (g * w[1]).sum(), (g * w[2]).sum(),
                          -(g * w[0] * lnN).sum(), -(g * w[1] * lnD).sum()])
best = None; t1 = time.time()
for a in range(0, 30, 5):
    for b in range(0, 30, 5):
        for e in (-1, -0.5, 0, 0.5, 1):
            for al in (0, 0.5, 1, 1.5, 2):
                for be in (0, 0.5, 1, 1.5, 2):
                    r = (minimize(lambda x: f(x)[0], [a, b, e, al, be], method="L-BFGS-B") if MODE == "huber-numgrad"
                         else minimize(f, [a, b, e, al, be], jac=True, method="L-BFGS-B"))
                    if np.all(np.abs(r.x[:3]) < 700) and (best is None or r.fun < best.fun):
                        best = r
a, b, e, al, be = best.x
print(MODE, f"points {keep.sum()} E {np.exp(e):.5f} A {np.exp(a):.2f} B {np.exp(b):.2f} alpha {al:.6f} beta {be:.6f} obj {best.fun:.7e}")
print(f"starts loop {time.time()-t1:.1f} s, whole script {time.time()-t0:.1f} s")
