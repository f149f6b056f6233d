//! Variable projection (VPNLS) for the Chinchilla law `L = E + A/N^α + B/D^β`.
//!
//! Owns the separable fit: for fixed (α, β) the loss is linear in (E, A, B), so those are
//! solved exactly by non-negative least squares ([`nnls`], every support of ≤ 3 columns
//! tried), and only the 2-D profile SSE(α, β) is searched: a grid (α, β ∈ {0.05, …, 2.5},
//! step 0.05) and Nelder–Mead from the best grid cells. The objective is the **sum of squared
//! errors on L** (as Open-Athena's analysis); E may be pinned. Pure functions over arrays.

use serde::Serialize;

use super::laws::ChinchillaParams;

/// Non-negative least squares `min ‖X c − y‖², c ≥ 0` for up to 3 columns: the least-squares
/// solution on every support whose coefficients are all non-negative, the best of them (for
/// so few columns this is the exact NNLS optimum). Returns (c, SSE).
pub fn nnls(cols: &[Vec<f64>], y: &[f64]) -> (Vec<f64>, f64) {
    let k = cols.len();
    let scale: Vec<f64> = cols
        .iter()
        .map(|c| c.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-300))
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let g: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| dot(&cols[i], &cols[j]) / (scale[i] * scale[j]))
                .collect()
        })
        .collect();
    let xy: Vec<f64> = (0..k).map(|i| dot(&cols[i], y) / scale[i]).collect();
    let yy = dot(y, y);
    let mut best = (vec![0.0; k], yy);
    for mask in 1u32..(1 << k) {
        let sup: Vec<usize> = (0..k).filter(|i| mask >> i & 1 == 1).collect();
        let m: Vec<Vec<f64>> = sup
            .iter()
            .map(|&i| sup.iter().map(|&j| g[i][j]).collect())
            .collect();
        let r: Vec<f64> = sup.iter().map(|&i| xy[i]).collect();
        let Some(sol) = solve(m, r) else { continue };
        if sol.iter().any(|v| *v < 0.0) {
            continue;
        }
        let mut c = vec![0.0; k];
        for (s, &i) in sol.iter().zip(&sup) {
            c[i] = *s;
        }
        let sse = yy - 2.0 * dot(&c, &xy) + quad(&g, &c);
        if sse < best.1 {
            best = (c, sse);
        }
    }
    let c: Vec<f64> = best.0.iter().zip(&scale).map(|(v, s)| v / s).collect();
    let sse = (0..y.len())
        .map(|p| {
            (cols
                .iter()
                .zip(&c)
                .map(|(col, ci)| col[p] * ci)
                .sum::<f64>()
                - y[p])
                .powi(2)
        })
        .sum();
    (c, sse)
}

fn quad(g: &[Vec<f64>], c: &[f64]) -> f64 {
    (0..c.len())
        .map(|i| (0..c.len()).map(|j| c[i] * g[i][j] * c[j]).sum::<f64>())
        .sum()
}

/// Gaussian elimination with partial pivoting; `None` when singular.
pub(crate) fn solve(mut m: Vec<Vec<f64>>, mut r: Vec<f64>) -> Option<Vec<f64>> {
    let n = r.len();
    for col in 0..n {
        let p = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[p][col].abs() < 1e-13 {
            return None;
        }
        m.swap(col, p);
        r.swap(col, p);
        for row in col + 1..n {
            let f = m[row][col] / m[col][col];
            for j in col..n {
                m[row][j] -= f * m[col][j];
            }
            r[row] -= f * r[col];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| m[i][j] * x[j]).sum();
        x[i] = (r[i] - s) / m[i][i];
    }
    Some(x)
}

/// The points in the form the profile needs: ln N, ln D and L.
pub struct Profile<'a> {
    pub ln_n: &'a [f64],
    pub ln_d: &'a [f64],
    pub loss: &'a [f64],
    /// E pinned (then only A and B are solved for).
    pub fixed_e: Option<f64>,
}

impl Profile<'_> {
    /// The law whose (E, A, B) are the NNLS solution at (α, β), and its SSE.
    pub fn solve(&self, alpha: f64, beta: f64) -> (ChinchillaParams, f64) {
        let xn: Vec<f64> = self.ln_n.iter().map(|v| (-alpha * v).exp()).collect();
        let xd: Vec<f64> = self.ln_d.iter().map(|v| (-beta * v).exp()).collect();
        let (e, a, b, sse) = match self.fixed_e {
            Some(e) => {
                let y: Vec<f64> = self.loss.iter().map(|l| l - e).collect();
                let (c, sse) = nnls(&[xn, xd], &y);
                (e, c[0], c[1], sse)
            }
            None => {
                let (c, sse) = nnls(&[vec![1.0; xn.len()], xn, xd], self.loss);
                (c[0], c[1], c[2], sse)
            }
        };
        (
            ChinchillaParams {
                e,
                a,
                b,
                alpha,
                beta,
            },
            sse,
        )
    }

    /// The profile SSE(α, β); +∞ outside α, β ∈ (0, 10].
    pub fn sse(&self, x: [f64; 2]) -> f64 {
        if x.iter().any(|v| !(*v > 0.0 && *v <= 10.0)) {
            return f64::INFINITY;
        }
        self.solve(x[0], x[1]).1
    }
}

/// A VPNLS fit.
#[derive(Debug, Clone, Serialize)]
pub struct VpnlsFit {
    #[serde(flatten)]
    pub params: ChinchillaParams,
    /// Σ (L̂ − L)² at the optimum.
    pub sse: f64,
    pub fixed_e: Option<f64>,
    pub grid_points: usize,
    /// Profile evaluations in the Nelder–Mead refinement.
    pub refine_evaluations: usize,
    pub seconds: f64,
}

/// VPNLS beside Approach 3 (`--method both`).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub fit: VpnlsFit,
    /// Approach 3's law's Σ (L̂ − L)², against `fit.sse`.
    pub approach3_sse: f64,
    /// The largest relative difference over E, A, B, α, β.
    pub max_rel_diff: f64,
    /// Whether the two laws differ by more than 1% in some parameter.
    pub differ: bool,
    pub note: String,
}

/// Compare a VPNLS fit with Approach 3's law `a3` (fitted with `a3_objective`).
pub fn compare(fit: VpnlsFit, a3: &ChinchillaParams, a3_sse: f64, a3_huber: bool) -> Comparison {
    let p = fit.params;
    let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-300);
    let max_rel_diff = [
        rel(p.e, a3.e),
        rel(p.a, a3.a),
        rel(p.b, a3.b),
        rel(p.alpha, a3.alpha),
        rel(p.beta, a3.beta),
    ]
    .into_iter()
    .fold(0.0, f64::max);
    let note = if a3_huber {
        "VPNLS minimises the squared error on L; Approach 3 here minimises Huber on log L, a different objective, so the laws may differ (use --objective sse to compare like with like)".into()
    } else if fit.sse < a3_sse * (1.0 - 1e-6) {
        "both minimise the squared error on L; VPNLS found a lower SSE than Approach 3's multi-start L-BFGS".into()
    } else {
        "both minimise the squared error on L".into()
    };
    Comparison {
        fit,
        approach3_sse: a3_sse,
        max_rel_diff,
        differ: max_rel_diff > 0.01,
        note,
    }
}

/// The (α, β) grid: 0.05 … 2.5 in steps of 0.05 on each axis (2,500 points).
pub fn grid() -> Vec<[f64; 2]> {
    let ax: Vec<f64> = (1..=50).map(|i| 0.05 * i as f64).collect();
    ax.iter()
        .flat_map(|&a| ax.iter().map(move |&b| [a, b]))
        .collect()
}

/// Fit by variable projection: the grid, then Nelder–Mead from the 3 best grid points.
pub fn fit(ln_n: &[f64], ln_d: &[f64], loss: &[f64], fixed_e: Option<f64>) -> VpnlsFit {
    let t0 = std::time::Instant::now();
    let prof = Profile {
        ln_n,
        ln_d,
        loss,
        fixed_e,
    };
    let g = grid();
    let mut scored: Vec<([f64; 2], f64)> = g.iter().map(|&x| (x, prof.sse(x))).collect();
    scored.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut evals = 0;
    let mut best = scored[0];
    for (x0, _) in scored.iter().take(3) {
        let (x, f, n) = nelder_mead(|x| prof.sse(x), *x0, 0.02);
        evals += n;
        if f < best.1 {
            best = (x, f);
        }
    }
    let (params, sse) = prof.solve(best.0[0], best.0[1]);
    VpnlsFit {
        params,
        sse,
        fixed_e,
        grid_points: g.len(),
        refine_evaluations: evals,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// 2-D Nelder–Mead from `x0` with initial step `step`: (x, f(x), evaluations).
pub fn nelder_mead(f: impl Fn([f64; 2]) -> f64, x0: [f64; 2], step: f64) -> ([f64; 2], f64, usize) {
    let mut s = [x0, [x0[0] + step, x0[1]], [x0[0], x0[1] + step]];
    let mut v = s.map(&f);
    let mut evals = 3;
    let lin =
        |a: [f64; 2], b: [f64; 2], t: f64| [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
    for _ in 0..2000 {
        let mut idx = [0, 1, 2];
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        (s, v) = (idx.map(|i| s[i]), idx.map(|i| v[i]));
        let size = (1..3)
            .map(|i| (s[i][0] - s[0][0]).abs() + (s[i][1] - s[0][1]).abs())
            .fold(0.0, f64::max);
        if size < 1e-11 || (v[2] - v[0]).abs() <= 1e-15 * v[0].abs() + 1e-300 {
            break;
        }
        let c = lin(s[0], s[1], 0.5);
        let r = lin(c, s[2], -1.0);
        let fr = f(r);
        evals += 1;
        if fr < v[0] {
            let e = lin(c, s[2], -2.0);
            let fe = f(e);
            evals += 1;
            (s[2], v[2]) = if fe < fr { (e, fe) } else { (r, fr) };
        } else if fr < v[1] {
            (s[2], v[2]) = (r, fr);
        } else {
            let k = if fr < v[2] {
                lin(c, r, 0.5)
            } else {
                lin(c, s[2], 0.5)
            };
            let fk = f(k);
            evals += 1;
            if fk < v[2].min(fr) {
                (s[2], v[2]) = (k, fk);
            } else {
                for i in 1..3 {
                    s[i] = lin(s[0], s[i], 0.5);
                    v[i] = f(s[i]);
                }
                evals += 2;
            }
        }
    }
    (s[0], v[0], evals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_matches_a_hand_solution_and_clips_negatives() {
        // y = 2·x1 + 3·x2 exactly: recovered; y = −x1: the best non-negative answer is 0.
        let x1 = vec![1.0, 2.0, 3.0, 4.0];
        let x2 = vec![1.0, 0.0, 1.0, 0.0];
        let y: Vec<f64> = x1.iter().zip(&x2).map(|(a, b)| 2.0 * a + 3.0 * b).collect();
        let (c, sse) = nnls(&[x1.clone(), x2.clone()], &y);
        assert!((c[0] - 2.0).abs() < 1e-12 && (c[1] - 3.0).abs() < 1e-12 && sse < 1e-20);
        let neg: Vec<f64> = x1.iter().map(|v| -v).collect();
        let (c, sse) = nnls(&[x1, x2], &neg);
        assert_eq!(c, vec![0.0, 0.0]);
        assert!((sse - 30.0).abs() < 1e-12);
    }

    #[test]
    fn nelder_mead_finds_a_quadratic_minimum() {
        let (x, f, _) = nelder_mead(
            |x| (x[0] - 0.3).powi(2) + 3.0 * (x[1] - 0.7).powi(2),
            [1.0, 1.0],
            0.1,
        );
        assert!(
            (x[0] - 0.3).abs() < 1e-6 && (x[1] - 0.7).abs() < 1e-6 && f < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn recovers_a_noise_free_law() {
        let (mut ln_n, mut ln_d, mut loss) = (vec![], vec![], vec![]);
        for i in 0..6 {
            for j in 0..6 {
                let (n, d) = (
                    1e7 * 10f64.powf(0.5 * i as f64),
                    1e9 * 10f64.powf(0.4 * j as f64),
                );
                ln_n.push(n.ln());
                ln_d.push(d.ln());
                loss.push(1.7 + 400.0 / n.powf(0.34) + 1800.0 / d.powf(0.28));
            }
        }
        let f = fit(&ln_n, &ln_d, &loss, None);
        let p = f.params;
        assert!(
            (p.alpha - 0.34).abs() < 1e-5 && (p.beta - 0.28).abs() < 1e-5,
            "{p:?}"
        );
        assert!(
            (p.e - 1.7).abs() < 1e-5 && (p.a / 400.0 - 1.0).abs() < 1e-3,
            "{p:?}"
        );
    }
}
