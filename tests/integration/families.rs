//! Model families: a sweep mixing the Transformer, the LSTM and the feed-forward LM trains
//! each, records its family and its loss by position, and the report fits each family on
//! its own.

use crate::common::*;

const MIXED: &str = "name: mixed
seed: 0
corpus:
  builtin: {seed: 7, topics: 4}
  eval_tokens: 2048
model:
  context: 16
  shapes:
    - {d_model: 16, n_layer: 1, n_head: 2}
    - {d_model: 24, n_layer: 1, n_head: 2}
    - {family: lstm, d_model: 16, n_layer: 1}
    - {family: lstm, d_model: 24, n_layer: 1}
    - {family: mlp, d_model: 8, n_layer: 1, d_ff: 32, window: 4}
    - {family: mlp, d_model: 16, n_layer: 1, d_ff: 64, window: 4, direct: true}
data:
  tokens: [8192, 16384, 32768]
  min_steps: 10
training:
  batch_size: 8
  lr: 1.0e-2
  warmup_steps: 5
";

#[test]
fn families_mixed_sweep_records_each_family_and_fits_each_separately() {
    let dir = tmp("families");
    let spec = dir.join("mixed.yaml");
    std::fs::write(&spec, MIXED).unwrap();
    let out = dir.join("out");
    let o = run_spec(&spec, &out, &["--workers", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(runs.len(), 18, "one row per run");
    use scalelab::model::FamilyKind;
    for fam in FamilyKind::ALL {
        let of: Vec<_> = runs.iter().filter(|r| r.family == fam).collect();
        assert_eq!(of.len(), 6, "{fam}");
        for r in of {
            assert!(
                r.eval_loss < 5.0,
                "{fam}: loss did not fall from ln(vocab): {}",
                r.eval_loss
            );
            assert_eq!(r.eval_loss_by_position.len(), 16, "{fam}");
            let mean = r.eval_loss_by_position.iter().sum::<f64>() / 16.0;
            assert!(
                (mean - r.eval_loss).abs() < 1e-9,
                "{fam}: {mean} vs {}",
                r.eval_loss
            );
            assert_eq!(r.mlp_window.is_some(), fam == FamilyKind::Mlp);
        }
    }
    assert!(runs.iter().any(|r| r.mlp_direct));
    let o = scalelab(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fams: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("families.json")).unwrap()).unwrap();
    let fits = fams["fits"].as_array().unwrap();
    assert_eq!(fits.len(), 3);
    for f in fits {
        assert_eq!(f["points"], 6, "{f}");
        assert!(
            f["approach3"]["alpha"].is_number(),
            "each family fitted: {f}"
        );
        assert!(f["l_of_n"]["alpha"].is_number(), "{f}");
    }
    // The main law is the Transformer's alone: its fit saw 6 points.
    let main: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fits.json")).unwrap()).unwrap();
    assert_eq!(main["n_points"], 6, "{}", main["n_points"]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Model families"), "{md}");
    for plot in ["families.png", "loss_by_position.png"] {
        assert!(out.join("plots").join(plot).is_file(), "{plot}");
    }
}
