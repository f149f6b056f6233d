//! Results folders made by the run-id scheme 1 (before the settings were nested and hashed
//! whole) are migrated in place: a rerun of the same spec finds every finished run. The
//! fixture is the main job's results folder as scalelab wrote it under scheme 1 (12 runs,
//! trained in order: scheme 1 predates shuffled data orders).

use crate::common::*;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn scheme_1_folder_is_migrated_not_retrained() {
    let dir = tmp("migrate-v1");
    let out = dir.join("quick");
    copy_dir(&repo().join("tests/fixtures/scheme1-quick"), &out);
    let before = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(before.len(), 12);
    // Today's default order is shuffled: the same spec now plans other runs, and none of
    // the old ones may be taken for them.
    let spec = out.join("sweep.yaml");
    let o = run_spec(&spec, &out, &["--max-runs", "0"]);
    assert!(
        o.status.success() && !stderr(&o).contains("renamed"),
        "{}",
        stderr(&o)
    );
    // With the order they were trained in, every old run is found under its new id.
    let text = std::fs::read_to_string(&spec).unwrap();
    let sequential = text.replace(
        "  schedule: cosine\n",
        "  schedule: cosine\n  data_order: sequential\n",
    );
    assert_ne!(text, sequential);
    let spec = dir.join("sequential.yaml");
    std::fs::write(&spec, sequential).unwrap();
    let o = run_spec(&spec, &out, &["--update-spec"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("renamed 12 finished runs from run-id scheme 1"),
        "{err}"
    );
    let after = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(after.len(), 12, "nothing duplicated");
    let ids = |v: &[scalelab::record::RunRecord]| {
        let mut ids: Vec<String> = v.iter().map(|r| r.run_id.clone()).collect();
        ids.sort();
        ids
    };
    assert!(
        ids(&before).iter().all(|id| !ids(&after).contains(id)),
        "ids renamed"
    );
    // Nothing was retrained: every row keeps its loss and wall time.
    let key = |r: &scalelab::record::RunRecord| {
        (
            r.n_params,
            r.tokens,
            r.eval_loss.to_bits(),
            r.wall_s.to_bits(),
        )
    };
    let mut a: Vec<_> = before.iter().map(key).collect();
    let mut b: Vec<_> = after.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(
        std::fs::read_dir(out.join("runs")).unwrap().count(),
        12,
        "old per-run files removed"
    );
    assert_eq!(scalelab::store::merged_run_ids(&out).unwrap().len(), 12);
    // A second rerun has nothing to rename or train.
    let o = run_spec(&spec, &out, &["--update-spec"]);
    assert!(
        o.status.success() && !stderr(&o).contains("renamed"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ids(&scalelab::store::read_runs(&out).unwrap()), ids(&after));
}
