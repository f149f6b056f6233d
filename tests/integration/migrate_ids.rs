//! Results folders made by the run-id scheme 1 (before the settings were nested and hashed
//! whole) are migrated in place: a rerun of the same spec finds every finished run.

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
    copy_dir(&repo().join("results/example-quick"), &out);
    let before = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(before.len(), 12);
    let spec = out.join("sweep.yaml");
    let o = run_spec(&spec, &out, &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("renamed 12 finished runs from run-id scheme 1"), "{err}");
    let after = scalelab::store::read_runs(&out).unwrap();
    assert_eq!(after.len(), 12, "nothing duplicated");
    let ids = |v: &[scalelab::record::RunRecord]| {
        let mut ids: Vec<String> = v.iter().map(|r| r.run_id.clone()).collect();
        ids.sort();
        ids
    };
    assert!(ids(&before).iter().all(|id| !ids(&after).contains(id)), "ids renamed");
    // Nothing was retrained: every row keeps its loss and wall time.
    let key = |r: &scalelab::record::RunRecord| (r.n_params, r.tokens, r.eval_loss.to_bits(), r.wall_s.to_bits());
    let mut a: Vec<_> = before.iter().map(key).collect();
    let mut b: Vec<_> = after.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(std::fs::read_dir(out.join("runs")).unwrap().count(), 12, "old per-run files removed");
    assert_eq!(scalelab::store::merged_run_ids(&out).unwrap().len(), 12);
    // A second rerun has nothing to rename or train.
    let o = run_spec(&spec, &out, &[]);
    assert!(o.status.success() && !stderr(&o).contains("renamed"), "{}", stderr(&o));
    assert_eq!(ids(&scalelab::store::read_runs(&out).unwrap()), ids(&after));
}
