//! The report: scaling plots (PNG + SVG), `report.md` and a self-contained `report.html`.
//!
//! Owns turning a results folder (or a table) plus its [`FitReport`] into documents. The fit
//! is computed once and written to `fits.json` by the same call, so every number in the
//! report is the number in `fits.json`. Figures that the data cannot support are skipped with
//! the reason, never a panic: the report says which and why.

pub mod plots;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::corpus::Floor;
use crate::fit::{self, num, Dataset, FitOptions, FitReport, Point};
use crate::store::RunRecord;
use plots::{Fig, Format};

/// One run's curve: (tokens, train loss) and eval points (tokens, eval loss).
pub struct RunCurve {
    pub n: f64,
    pub points: Vec<(f64, f64)>,
    pub eval: Vec<(f64, f64)>,
}

/// Everything a report shows.
pub struct ReportData {
    pub title: String,
    pub source: String,
    pub points: Vec<Point>,
    pub runs: Vec<RunRecord>,
    pub curves: Vec<RunCurve>,
    pub metadata: Vec<(String, String)>,
    pub floor: Option<Floor>,
    pub fit: Option<FitReport>,
    /// Why there is no fit, when there is none.
    pub fit_error: Option<String>,
    /// n-gram baselines (`baselines.parquet`), when the sweep has them.
    pub baselines: Vec<crate::ngram::BaselineRow>,
}

impl ReportData {
    /// From a results folder: runs, curves, metadata and floor; fitted with `opts`.
    pub fn from_results(dir: &Path, opts: &FitOptions) -> anyhow::Result<ReportData> {
        let data = Dataset::from_results(dir, 0)?;
        let runs = crate::store::read_runs(dir)?;
        let metadata =
            crate::store::read_metadata(&dir.join(crate::store::RUNS_FILE)).unwrap_or_default();
        let floor = std::fs::read_to_string(dir.join("floor.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| {
                Some(Floor {
                    nats_per_token: v["nats_per_token"].as_f64()?,
                    bits_per_byte: v["bits_per_byte"].as_f64()?,
                    entropy_rate_bits_per_byte: v["entropy_rate_bits_per_byte"].as_f64()?,
                })
            });
        let n_of: std::collections::HashMap<&str, f64> = runs
            .iter()
            .filter(|r| r.status == "ok")
            .map(|r| (r.run_id.as_str(), r.n_params as f64))
            .collect();
        let mut curves: Vec<RunCurve> = Vec::new();
        let mut by_run: std::collections::BTreeMap<String, RunCurve> = Default::default();
        for (id, c) in crate::store::read_curves(dir)? {
            let Some(&n) = n_of.get(id.as_str()) else {
                continue;
            };
            let e = by_run.entry(id).or_insert_with(|| RunCurve {
                n,
                points: Vec::new(),
                eval: Vec::new(),
            });
            if c.tokens > 0 && c.train_loss.is_finite() {
                e.points.push((c.tokens as f64, c.train_loss));
            }
            if let Some(ev) = c.eval_loss.filter(|v| v.is_finite()) {
                e.eval.push((c.tokens as f64, ev));
            }
        }
        curves.extend(by_run.into_values());
        let name = metadata
            .iter()
            .find(|(k, _)| k == "scalelab.sweep")
            .map(|(_, v)| v.clone());
        let (fit, fit_error) = fit_or_reason(&data, opts);
        Ok(ReportData {
            title: format!(
                "Scaling report: {}",
                name.unwrap_or_else(|| dir.display().to_string())
            ),
            source: dir.display().to_string(),
            points: data.points,
            runs,
            curves,
            metadata,
            floor,
            fit,
            fit_error,
            baselines: crate::store::read_baselines(dir).unwrap_or_default(),
        })
    }

    /// From a table of points (no runs or curves).
    pub fn from_dataset(data: Dataset, opts: &FitOptions) -> ReportData {
        let (fit, fit_error) = fit_or_reason(&data, opts);
        ReportData {
            title: format!("Scaling report: {}", data.source),
            source: data.source.clone(),
            points: data.points,
            runs: Vec::new(),
            curves: Vec::new(),
            metadata: Vec::new(),
            floor: None,
            fit,
            fit_error,
            baselines: Vec::new(),
        }
    }
}

fn fit_or_reason(data: &Dataset, opts: &FitOptions) -> (Option<FitReport>, Option<String>) {
    match fit::fit_all(data, opts) {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// What [`write`] produced.
pub struct Written {
    pub files: Vec<PathBuf>,
    pub drawn: Vec<Fig>,
    pub skipped: Vec<(Fig, String)>,
}

/// Write plots, `fits.json` (when fitted), `report.md` and `report.html` into `out`.
pub fn write(d: &ReportData, out: &Path, formats: &[Format]) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out)?;
    let plot_dir = out.join("plots");
    let mut files = Vec::new();
    let mut drawn = Vec::new();
    let mut skipped = Vec::new();
    for fig in Fig::ALL {
        match fig.skip_reason(d) {
            Some(reason) => skipped.push((fig, reason)),
            None => {
                files.extend(plots::render(fig, d, &plot_dir, formats)?);
                drawn.push(fig);
            }
        }
    }
    if let Some(f) = &d.fit {
        let p = out.join("fits.json");
        crate::store::write_text_atomic(&p, &serde_json::to_string_pretty(f)?)?;
        files.push(p);
    }
    let blocks = blocks(d, &drawn, &skipped);
    let md = out.join("report.md");
    crate::store::write_text_atomic(&md, &render_md(&blocks, formats))?;
    let html = out.join("report.html");
    crate::store::write_text_atomic(&html, &render_html(&d.title, &blocks, &plot_dir, formats)?)?;
    files.push(md);
    files.push(html);
    Ok(Written {
        files,
        drawn,
        skipped,
    })
}

/// The report's content, rendered to Markdown and HTML alike.
enum Block {
    H(u8, String),
    P(String),
    Table(Vec<String>, Vec<Vec<String>>),
    Figure(Fig),
}

fn ci(v: Option<[f64; 2]>) -> String {
    v.map(|v| format!("{} – {}", num(v[0]), num(v[1])))
        .unwrap_or_else(|| "–".into())
}

fn estimate_header() -> Vec<String> {
    ["parameter", "estimate", "95% bootstrap CI"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn blocks(d: &ReportData, drawn: &[Fig], skipped: &[(Fig, String)]) -> Vec<Block> {
    use Block::*;
    let mut b = vec![H(1, d.title.clone())];
    // Summary.
    let meta = |k: &str| {
        d.metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let ok = d.runs.iter().filter(|r| r.status == "ok").count();
    let mut rows = vec![vec!["source".into(), d.source.clone()]];
    for (label, key) in [
        ("sweep spec hash", "scalelab.spec_hash"),
        ("corpus", "scalelab.corpus"),
        ("backend", "scalelab.backend"),
        ("scalelab version", "scalelab.version"),
        ("host", "scalelab.host"),
    ] {
        if let Some(v) = meta(key) {
            rows.push(vec![label.into(), v]);
        }
    }
    if !d.runs.is_empty() {
        let div = d.runs.iter().filter(|r| r.status == "diverged").count();
        let fail = d.runs.iter().filter(|r| r.status == "failed").count();
        rows.push(vec![
            "runs".into(),
            format!("{} ({ok} ok, {div} diverged, {fail} failed)", d.runs.len()),
        ]);
        rows.push(vec![
            "total training compute".into(),
            format!(
                "{:.3e} FLOPs (C = 6ND)",
                d.runs.iter().map(|r| r.flops).sum::<f64>()
            ),
        ]);
        rows.push(vec![
            "total wall time".into(),
            format!("{:.1} s", d.runs.iter().map(|r| r.wall_s).sum::<f64>()),
        ]);
    } else {
        rows.push(vec!["points".into(), d.points.len().to_string()]);
    }
    b.push(Table(vec!["".into(), "".into()], rows));
    // Fit.
    match &d.fit {
        None => b.push(P(format!(
            "No scaling law was fitted: {}",
            d.fit_error.as_deref().unwrap_or("unknown reason")
        ))),
        Some(f) => {
            let bs = f.bootstrap.as_ref();
            b.push(H(2, "Approach 3: L(N, D) = E + A/N^α + B/D^β".into()));
            b.push(Table(
                estimate_header(),
                vec![
                    vec!["E".into(), num(f.e), ci(bs.map(|b| b.e))],
                    vec!["A".into(), num(f.a), ci(bs.map(|b| b.a_coef))],
                    vec!["B".into(), num(f.b), ci(bs.map(|b| b.b_coef))],
                    vec!["α".into(), num(f.alpha), ci(bs.map(|b| b.alpha))],
                    vec!["β".into(), num(f.beta), ci(bs.map(|b| b.beta))],
                ],
            ));
            for w in &f.warnings {
                b.push(P(format!("Warning: {w}.")));
            }
            let c = &f.approach3.convergence;
            b.push(P(format!(
                "{} points; summed Huber (δ = {}) on log-loss, objective {:.6e}; {} L-BFGS starts ({} failed), best after {} iterations (|∇| = {:.1e}){}.",
                f.n_points,
                f.approach3.huber_delta,
                f.objective,
                c.starts,
                c.failed_starts,
                c.best_iterations,
                c.best_grad_norm,
                bs.map(|b| format!("; {} bootstrap resamples (seed {})", b.resamples, b.seed)).unwrap_or_default()
            )));
            if let Some(dc) = &f.data_constrained {
                b.push(H(
                    2,
                    "Data-constrained law (Muennighoff et al. 2023)".into(),
                ));
                b.push(Table(
                    estimate_header(),
                    vec![
                        vec![
                            "R_D* (repeated data)".into(),
                            num(dc.r_d_star),
                            ci(dc.r_d_star_ci),
                        ],
                        vec![
                            "R_N* (excess parameters)".into(),
                            num(dc.r_n_star),
                            ci(dc.r_n_star_ci),
                        ],
                    ],
                ));
                b.push(P(format!(
                    "{} points, {} with repeated data; objective {:.6}, R² {:.4}; base law held fixed (E = {}, A = {}, B = {}, α = {}, β = {}) from {}.",
                    dc.n_points,
                    dc.n_repeated,
                    dc.objective,
                    dc.r2,
                    num(dc.base.e),
                    num(dc.base.a),
                    num(dc.base.b),
                    num(dc.base.alpha),
                    num(dc.base.beta),
                    f.data_constrained_base.as_deref().unwrap_or("?")
                )));
            }
            if let Some(fl) = d.floor {
                b.push(P(format!(
                    "Built-in corpus: the exact loss floor of the eval set is {:.4} nats/token ({:.4} bits/byte); the fitted irreducible loss is E = {} (95% CI {}).",
                    fl.nats_per_token,
                    fl.bits_per_byte,
                    num(f.e),
                    ci(bs.map(|b| b.e))
                )));
            }
            b.push(H(
                2,
                "Do the approaches agree? Compute-optimal exponent a (N_opt ∝ C^a)".into(),
            ));
            let mut rows = vec![vec![
                "Approach 3 (parametric fit)".into(),
                num(f.compute_optimal.a),
                ci(bs.map(|b| b.a)),
                format!("{} points", f.n_points),
            ]];
            rows.push(vec![
                "Approach 2 (IsoFLOP parabolas)".into(),
                f.approach2.a.map(num).unwrap_or_else(|| "–".into()),
                "–".into(),
                format!(
                    "{} of {} budgets usable",
                    f.approach2.used_budgets,
                    f.approach2.budgets.len()
                ),
            ]);
            rows.push(vec![
                "Approach 1 (curve envelope)".into(),
                f.approach1
                    .as_ref()
                    .and_then(|a| a.a)
                    .map(num)
                    .unwrap_or_else(|| "–".into()),
                "–".into(),
                f.approach1
                    .as_ref()
                    .map(|a| format!("{} envelope points", a.envelope.len()))
                    .unwrap_or_else(|| "no curves".into()),
            ]);
            b.push(Table(
                vec![
                    "approach".into(),
                    "a".into(),
                    "95% CI".into(),
                    "basis".into(),
                ],
                rows,
            ));
            if !f.approach2.budgets.is_empty() {
                b.push(H(3, format!("IsoFLOP budgets ({})", f.approach2.grouping)));
                b.push(Table(
                    vec![
                        "budget C".into(),
                        "points".into(),
                        "N_opt".into(),
                        "D_opt".into(),
                        "loss at N_opt".into(),
                        "used".into(),
                    ],
                    f.approach2
                        .budgets
                        .iter()
                        .map(|bg| {
                            vec![
                                format!("{:.3e}", bg.budget),
                                bg.points.to_string(),
                                bg.n_opt
                                    .map(|v| format!("{v:.3e}"))
                                    .unwrap_or_else(|| "–".into()),
                                bg.d_opt
                                    .map(|v| format!("{v:.3e}"))
                                    .unwrap_or_else(|| "–".into()),
                                bg.loss_at_opt.map(num).unwrap_or_else(|| "–".into()),
                                bg.excluded
                                    .clone()
                                    .map(|e| format!("no: {e}"))
                                    .unwrap_or_else(|| "yes".into()),
                            ]
                        })
                        .collect(),
                ));
            }
            b.push(H(
                2,
                "Extrapolation: the compute-optimal model for target budgets".into(),
            ));
            if f.compute_optimal.targets.is_empty() {
                b.push(P(
                    "No target budgets given (`--target-flops` or `target_flops:` in the sweep)."
                        .into(),
                ));
            } else {
                b.push(Table(
                    vec![
                        "C (FLOPs)".into(),
                        "N*".into(),
                        "N* 95% CI".into(),
                        "D*".into(),
                        "tokens/param".into(),
                        "predicted loss".into(),
                        "loss 95% CI".into(),
                    ],
                    f.compute_optimal
                        .targets
                        .iter()
                        .map(|t| {
                            vec![
                                format!("{:.3e}", t.flops),
                                format!("{:.3e}", t.n_opt),
                                t.n_opt_ci
                                    .map(|v| format!("{:.3e} – {:.3e}", v[0], v[1]))
                                    .unwrap_or_else(|| "–".into()),
                                format!("{:.3e}", t.d_opt),
                                format!("{:.1}", t.tokens_per_param),
                                num(t.loss),
                                ci(t.loss_ci),
                            ]
                        })
                        .collect(),
                ));
            }
            b.push(H(2, "Held-out prediction".into()));
            match &f.holdout {
                Some(h) => {
                    b.push(P(format!(
                        "Fitted on {} points without {} ({} points); prediction error on them: mean |Δloss| = {:.4}, mean {:.2}%, max {:.2}%.",
                        h.fitted_points,
                        h.rule,
                        h.held_out_points,
                        h.mean_abs_error,
                        100.0 * h.mean_abs_pct_error,
                        100.0 * h.max_abs_pct_error
                    )));
                    b.push(Table(
                        vec!["N".into(), "D".into(), "observed".into(), "predicted".into()],
                        h.points
                            .iter()
                            .map(|p| vec![format!("{:.3e}", p.n), format!("{:.3e}", p.d), num(p.loss), num(p.predicted)])
                            .collect(),
                    ));
                }
                None => b.push(P(match &f.holdout_note {
                    Some(n) => format!("The hold-out check could not be done: {n}."),
                    None => "No hold-out check was requested (`--holdout largest-budget` or a fraction).".into(),
                })),
            }
            b.push(H(2, "Kaplan forms".into()));
            let mut rows: Vec<Vec<String>> = f
                .kaplan
                .laws
                .iter()
                .map(|l| {
                    vec![
                        format!(
                            "L({0}) = ({0}_c/{0})^α{1}",
                            l.variable,
                            if l.e.is_some() { " + E" } else { "" }
                        ),
                        format!("{}_c = {:.3e}", l.variable, l.x_c),
                        num(l.alpha),
                        l.e.map(num).unwrap_or_else(|| "–".into()),
                    ]
                })
                .collect();
            if let Some(j) = &f.kaplan.joint {
                rows.push(vec![
                    "L(N,D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D".into(),
                    format!("N_c = {:.3e}, D_c = {:.3e}", j.n_c, j.d_c),
                    format!("α_N {}, α_D {}", num(j.alpha_n), num(j.alpha_d)),
                    "–".into(),
                ]);
            }
            b.push(Table(
                vec!["law".into(), "scale".into(), "exponent".into(), "E".into()],
                rows,
            ));
            b.push(P(f.kaplan.note.clone()));
        }
    }
    // Runs.
    if !d.runs.is_empty() {
        b.push(H(2, "Runs".into()));
        let mut runs: Vec<&RunRecord> = d.runs.iter().collect();
        runs.sort_by(|a, b| a.n_params.cmp(&b.n_params).then(a.tokens.cmp(&b.tokens)));
        b.push(Table(
            [
                "run",
                "shape",
                "N",
                "D",
                "C",
                "eval loss",
                "bits/token",
                "bits/byte",
                "epochs",
                "tokens/s",
                "status",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            runs.iter()
                .map(|r| {
                    vec![
                        r.run_id.clone(),
                        format!("d{}-L{}-h{}", r.d_model, r.n_layer, r.n_head),
                        format!("{:.3e}", r.n_params as f64),
                        format!("{:.3e}", r.tokens as f64),
                        format!("{:.3e}", r.flops),
                        num(r.eval_loss),
                        num(r.eval_bits_per_token),
                        num(r.eval_bits_per_byte),
                        format!("{:.2}", r.epochs),
                        format!("{:.0}", r.tokens_per_s),
                        r.status.clone(),
                    ]
                })
                .collect(),
        ));
    }
    // n-gram baselines.
    if !d.baselines.is_empty() {
        b.push(H(2, "n-gram baselines (interpolated Kneser-Ney)".into()));
        b.push(P("Trained on the first D training tokens the runs saw and scored on the same eval windows (each window predicts its tokens from the tokens before them in the window). Bits per byte compare across tokenizers.".into()));
        b.push(Table(
            [
                "n",
                "D (tokens)",
                "eval loss (nats/token)",
                "bits/byte",
                "n-grams",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            d.baselines
                .iter()
                .map(|r| {
                    vec![
                        r.order.to_string(),
                        format!("{:.3e}", r.train_tokens as f64),
                        num(r.eval_loss),
                        num(r.eval_bits_per_byte),
                        r.n_grams.to_string(),
                    ]
                })
                .collect(),
        ));
        if let Some(best) = d
            .baselines
            .iter()
            .min_by(|a, b| a.eval_loss.total_cmp(&b.eval_loss))
        {
            let best_run = d
                .runs
                .iter()
                .filter(|r| r.status == "ok")
                .map(|r| r.eval_loss)
                .fold(f64::INFINITY, f64::min);
            if best_run.is_finite() {
                b.push(P(format!(
                    "Best n-gram: {}-gram on {:.3e} tokens, {} nats/token; best neural run: {} nats/token ({}).",
                    best.order,
                    best.train_tokens as f64,
                    num(best.eval_loss),
                    num(best_run),
                    if best_run < best.eval_loss { "the Transformer wins" } else { "the n-gram wins" }
                )));
            }
        }
    }
    // Figures.
    b.push(H(2, "Figures".into()));
    for f in drawn {
        b.push(Figure(*f));
    }
    if !skipped.is_empty() {
        b.push(P(format!(
            "Skipped: {}.",
            skipped
                .iter()
                .map(|(f, r)| format!("{} ({r})", f.title()))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    if let Some(f) = &d.fit {
        b.push(H(2, "Fitting choices".into()));
        for c in &f.choices {
            b.push(P(format!("- {c}")));
        }
    }
    b
}

fn render_md(blocks: &[Block], formats: &[Format]) -> String {
    let mut s = String::new();
    let ext = if formats.contains(&Format::Png) {
        "png"
    } else {
        "svg"
    };
    for b in blocks {
        match b {
            Block::H(level, t) => {
                let _ = writeln!(s, "{} {t}\n", "#".repeat(*level as usize));
            }
            Block::P(t) => {
                let _ = writeln!(s, "{t}\n");
            }
            Block::Table(head, rows) => {
                let _ = writeln!(s, "| {} |", head.join(" | "));
                let _ = writeln!(
                    s,
                    "|{}|",
                    head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
                );
                for r in rows {
                    let _ = writeln!(s, "| {} |", r.join(" | "));
                }
                s.push('\n');
            }
            Block::Figure(f) => {
                let _ = writeln!(
                    s,
                    "### {}\n\n![{}](plots/{}.{ext})\n",
                    f.title(),
                    f.title(),
                    f.name()
                );
            }
        }
    }
    s
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Standard base64 (for embedding PNGs in the HTML).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn render_html(
    title: &str,
    blocks: &[Block],
    plot_dir: &Path,
    formats: &[Format],
) -> anyhow::Result<String> {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222;line-height:1.45}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         th{{background:#f3f3f3}}img,svg{{max-width:100%;height:auto}}figure{{margin:1.5em 0}}</style></head><body>\n",
        esc(title)
    );
    for b in blocks {
        match b {
            Block::H(level, t) => {
                let _ = writeln!(s, "<h{level}>{}</h{level}>", esc(t));
            }
            Block::P(t) => {
                let _ = writeln!(s, "<p>{}</p>", esc(t));
            }
            Block::Table(head, rows) => {
                s.push_str("<table>");
                if head.iter().any(|h| !h.is_empty()) {
                    s.push_str("<tr>");
                    for h in head {
                        let _ = write!(s, "<th>{}</th>", esc(h));
                    }
                    s.push_str("</tr>");
                }
                for r in rows {
                    s.push_str("<tr>");
                    for c in r {
                        let _ = write!(s, "<td>{}</td>", esc(c));
                    }
                    s.push_str("</tr>");
                }
                s.push_str("</table>\n");
            }
            Block::Figure(f) => {
                let _ = write!(
                    s,
                    "<figure id=\"{}\"><figcaption><b>{}</b></figcaption>",
                    f.name(),
                    esc(f.title())
                );
                if formats.contains(&Format::Png) {
                    let png = std::fs::read(plot_dir.join(format!("{}.png", f.name())))?;
                    let _ = write!(
                        s,
                        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                        esc(f.title()),
                        base64(&png)
                    );
                } else {
                    let svg = std::fs::read_to_string(plot_dir.join(format!("{}.svg", f.name())))?;
                    let body = svg.find("<svg").map(|i| &svg[i..]).unwrap_or(&svg);
                    s.push_str(body);
                }
                s.push_str("</figure>\n");
            }
        }
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
