//! The Slurm executor: `submit`, `status` and `collect`.
//!
//! Owns turning a sweep's pending work into one sbatch job array (one task per pending unit:
//! a run, or a stable parent with its cooldown branches), each task running
//! `scalelab run-one` for its unit and writing only its own result files; reporting the state
//! of every run from the result files, checkpoints, locks and (when present) `squeue` and
//! `sacct`; and merging the per-run files into `runs.parquet` / `curves.parquet`.
//! Slurm does the scheduling, requeueing and accounting; scalelab schedules nothing itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bail_user;
use crate::record::Status;
use crate::spec::{valid_slurm_time, SlurmSpec};
use crate::store;
use crate::sweep::{self, Prepared};

/// `submit` flags; each overrides the spec's `slurm:` key of the same name.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub slurm: SlurmSpec,
    pub dry_run: bool,
    pub update_spec: bool,
}

/// Single-quote a string for bash.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether `prog` is an executable on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let f = d.join(prog);
            f.is_file()
                && std::fs::metadata(&f).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

fn merged(flags: &SlurmSpec, spec: &SlurmSpec) -> SlurmSpec {
    SlurmSpec {
        partition: flags.partition.clone().or(spec.partition.clone()),
        account: flags.account.clone().or(spec.account.clone()),
        time: flags.time.clone().or(spec.time.clone()),
        gpus_per_task: flags.gpus_per_task.or(spec.gpus_per_task),
        cpus_per_task: flags.cpus_per_task.or(spec.cpus_per_task),
        mem: flags.mem.clone().or(spec.mem.clone()),
        max_parallel: flags.max_parallel.or(spec.max_parallel),
        requeue: flags.requeue.or(spec.requeue),
        extra: [spec.extra.clone(), flags.extra.clone()].concat(),
    }
}

/// The sbatch script for `n` tasks listed in `tasks`.
fn script(
    p: &Prepared,
    s: &SlurmSpec,
    n: usize,
    tasks: &Path,
    out: &Path,
) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let mut t = String::from("#!/bin/bash\n");
    t += &format!(
        "# Written by `scalelab submit`: one array task per pending unit of sweep {}.\n",
        p.spec.name
    );
    t += &sbatch_options(p, s, n, out)?;
    t += "set -euo pipefail\n";
    t += "# One CPU thread per allocated core (burn's CPU backend uses rayon).\n";
    t += "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n";
    // Inside the allocation, the task's GPU is cuda:0.
    let device = if s.gpus_per_task.unwrap_or(0) > 0 {
        "cuda".to_string()
    } else {
        p.device.short_name()
    };
    t += &format!(
        "exec {} run-one {} --tasks {} --task \"$SLURM_ARRAY_TASK_ID\" --device {}\n",
        sh(&exe.display().to_string()),
        sh(&out.display().to_string()),
        sh(&tasks.display().to_string()),
        device
    );
    Ok(t)
}

/// The `#SBATCH` lines: the array, its logs, the folder and the resources.
fn sbatch_options(p: &Prepared, s: &SlurmSpec, n: usize, out: &Path) -> anyhow::Result<String> {
    let cwd = std::env::current_dir()?;
    let mut t = format!("#SBATCH --job-name=scalelab-{}\n", p.spec.name);
    let throttle = s.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
    t += &format!("#SBATCH --array=0-{}{throttle}\n", n - 1);
    t += &format!("#SBATCH --output={}/slurm/logs/%A_%a.out\n", out.display());
    t += "#SBATCH --open-mode=append\n";
    t += &format!("#SBATCH --chdir={}\n", cwd.display());
    t += "#SBATCH --ntasks=1\n";
    if s.requeue.unwrap_or(true) {
        t += "#SBATCH --requeue\n";
    } else {
        t += "#SBATCH --no-requeue\n";
    }
    let opt = |t: &mut String, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            *t += &format!("#SBATCH --{k}={v}\n");
        }
    };
    opt(&mut t, "partition", &s.partition);
    opt(&mut t, "account", &s.account);
    opt(&mut t, "time", &s.time);
    opt(&mut t, "mem", &s.mem);
    opt(
        &mut t,
        "cpus-per-task",
        &s.cpus_per_task.map(|c| c.to_string()),
    );
    let gpus = s.gpus_per_task.unwrap_or(0);
    if gpus > 0 {
        t += &format!("#SBATCH --gpus-per-task={gpus}\n");
    }
    for e in &s.extra {
        t += &format!("#SBATCH {}\n", e.trim());
    }
    Ok(t)
}

fn partitions() -> Option<Vec<String>> {
    let o = Command::new("sinfo")
        .args(["-h", "-o", "%R"])
        .output()
        .ok()?;
    o.status.success().then(|| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().trim_end_matches('*').to_string())
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// Submit every pending unit as one job array; returns what to print.
pub fn submit(p: &Prepared, o: &SubmitOptions) -> anyhow::Result<String> {
    let updated = sweep::check_results_folder(p, o.update_spec)? == sweep::SpecChange::Updated;
    let s = checked_options(&o.slurm, &p.spec.slurm)?;
    let (ids, pending_runs) = sweep::pending_unit_ids(p)?;
    if ids.is_empty() {
        // Every run of the updated spec is finished: the folder takes the new spec now.
        if updated && !o.dry_run {
            sweep::set_aside_outdated_runs(p)?;
            sweep::write_folder_files(p, &p.out_dir)?;
        }
        return Ok(format!(
            "nothing to submit: all {} runs of {} are finished (see `scalelab status {}`)\n",
            p.plan.runs.len(),
            p.out_dir.display(),
            p.out_dir.display()
        ));
    }
    let files = ArrayFiles::new(&p.out_dir)?;
    let text = script(p, &s, ids.len(), &files.tasks, &files.out)?;
    if o.dry_run {
        known_partition(&s)?;
        return Ok(format!(
            "{text}# dry run: nothing submitted or written; {} tasks would be listed in {}\n",
            ids.len(),
            files.tasks.display()
        ));
    }
    preflight(&s)?;
    // After every check and before the folder takes the new spec (`files.submit` writes it).
    if updated {
        sweep::set_aside_outdated_runs(p)?;
    }
    let job = files.submit(p, &ids, &text)?;
    Ok(format!(
        "submitted job array {job}: {} tasks ({} of {} runs pending) from {}\n\
         follow it with `scalelab status {}`; merge the results with `scalelab collect {}`\n",
        ids.len(),
        pending_runs,
        p.plan.runs.len(),
        files.script.display(),
        p.out_dir.display(),
        p.out_dir.display()
    ))
}

/// The flags over the spec's `slurm:` section, checked.
fn checked_options(flags: &SlurmSpec, spec: &SlurmSpec) -> anyhow::Result<SlurmSpec> {
    let s = merged(flags, spec);
    if let Some(t) = &s.time {
        if !valid_slurm_time(t) {
            bail_user!("--time {t:?} is not a Slurm time limit; write HH:MM:SS or D-HH:MM:SS");
        }
    }
    if s.max_parallel == Some(0) {
        bail_user!("--max-parallel must be at least 1");
    }
    if s.cpus_per_task == Some(0) {
        bail_user!("--cpus-per-task (or slurm.cpus_per_task) must be at least 1");
    }
    if let Some(m) = s.mem.as_deref().filter(|m| !valid_slurm_mem(m)) {
        bail_user!(
            "--mem {m:?} (or slurm.mem) is not a Slurm memory size; write a whole number with an optional unit K, M, G or T, e.g. 16G"
        );
    }
    for (flag, v) in [("--partition", &s.partition), ("--account", &s.account)] {
        if let Some(v) = v.as_deref().filter(|v| !valid_slurm_name(v)) {
            bail_user!(
                "{flag} {v:?} is not a Slurm name; use letters, digits, '-', '_' and '.' (several partitions: comma-separated)"
            );
        }
    }
    Ok(s)
}

/// A Slurm `--mem` value: digits with an optional K/M/G/T unit, itself optionally followed by
/// B (`16G`, `16GB`, `500M`, `16000`, `0`).
fn valid_slurm_mem(m: &str) -> bool {
    let m = match m.strip_suffix(['B', 'b']) {
        Some(r) if r.ends_with(|c: char| "KMGTkmgt".contains(c)) => r,
        _ => m,
    };
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    !digits.is_empty() && digits.len() + 1 >= m.len() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A partition or account name (or a comma-separated list of partitions).
fn valid_slurm_name(v: &str) -> bool {
    !v.is_empty()
        && v.split(',').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
}

/// Before anything is written: a Slurm client, and a partition the cluster knows.
fn preflight(s: &SlurmSpec) -> anyhow::Result<()> {
    if !on_path("sbatch") {
        bail_user!(
            "`sbatch` was not found on PATH: `scalelab submit` needs a Slurm client on this machine. \
             Run it on the cluster's login node, use `--dry-run` to print the job script, or train \
             locally with `scalelab run`"
        );
    }
    known_partition(s)
}

/// The partition, when one is set and `sinfo` can list the cluster's: one it knows.
fn known_partition(s: &SlurmSpec) -> anyhow::Result<()> {
    if let (Some(part), Some(known)) = (&s.partition, partitions()) {
        if let Some(p) = part.split(',').find(|p| !known.iter().any(|k| k == p)) {
            bail_user!(
                "unknown Slurm partition {p:?} (--partition or slurm.partition); this cluster has: {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

/// The files of one job array: `slurm/tasks-<stamp>.txt` (one unit id per line),
/// `slurm/job-<stamp>.sbatch`, and the line it adds to `slurm/jobs.tsv`.
struct ArrayFiles {
    /// The results folder, absolute (the tasks may start elsewhere).
    out: PathBuf,
    slurm_dir: PathBuf,
    tasks: PathBuf,
    script: PathBuf,
}

impl ArrayFiles {
    fn new(out_dir: &Path) -> anyhow::Result<ArrayFiles> {
        let out = std::path::absolute(out_dir)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let slurm_dir = out.join("slurm");
        Ok(ArrayFiles {
            tasks: slurm_dir.join(format!("tasks-{stamp}.txt")),
            script: slurm_dir.join(format!("job-{stamp}.sbatch")),
            slurm_dir,
            out,
        })
    }

    /// Write the folder's files, the task list and the script, submit the script, and
    /// record the job in `jobs.tsv`; returns the job id.
    fn submit(&self, p: &Prepared, ids: &[String], text: &str) -> anyhow::Result<String> {
        let before = FolderBefore::of(self);
        crate::fsio::create_dir_all(&self.slurm_dir.join("logs"))?;
        sweep::write_folder_files(p, &self.out)?;
        crate::fsio::write_text_atomic(&self.tasks, &(ids.join("\n") + "\n"))?;
        crate::fsio::write_text_atomic(&self.script, text)?;
        let res = Command::new("sbatch")
            .arg("--parsable")
            .arg(&self.script)
            .output()?;
        if !res.status.success() {
            let _ = std::fs::remove_file(&self.tasks);
            let _ = std::fs::remove_file(&self.script);
            before.restore();
            bail_user!(
                "sbatch rejected the job array ({}): {}. Nothing was submitted; finished results are kept",
                res.status,
                String::from_utf8_lossy(&res.stderr).trim()
            );
        }
        let job = String::from_utf8_lossy(&res.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        let jobs_file = self.slurm_dir.join("jobs.tsv");
        let mut jobs = std::fs::read_to_string(&jobs_file).unwrap_or_default();
        jobs += &format!("{job}\t{}\t{}\n", self.tasks.display(), ids.len());
        crate::fsio::write_text_atomic(&jobs_file, &jobs)?;
        Ok(job)
    }
}

/// What a results folder held before a submit wrote into it: after sbatch rejects the job,
/// exactly what the submit created is removed again (files and folders that were there stay).
struct FolderBefore {
    /// The folder files `write_folder_files` may write that did not exist.
    new_files: Vec<PathBuf>,
    /// Folders the submit creates that did not exist, innermost first.
    new_dirs: Vec<PathBuf>,
}

impl FolderBefore {
    fn of(files: &ArrayFiles) -> FolderBefore {
        let new_files = [
            crate::fsio::SWEEP_FILE,
            crate::fsio::FLOOR_FILE,
            "tokenizer.json",
        ]
        .iter()
        .map(|f| files.out.join(f))
        .filter(|p| !p.exists())
        .collect();
        let new_dirs = [
            files.slurm_dir.join("logs"),
            files.slurm_dir.clone(),
            files.out.clone(),
        ]
        .into_iter()
        .filter(|p| !p.exists())
        .collect();
        FolderBefore {
            new_files,
            new_dirs,
        }
    }

    fn restore(&self) {
        for f in &self.new_files {
            let _ = std::fs::remove_file(f);
        }
        for d in &self.new_dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Submitted arrays: (job id, task list).
fn jobs(dir: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(dir.join("slurm/jobs.tsv")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (job, file) = (f.next()?, f.next()?);
            let tasks = std::fs::read_to_string(file)
                .ok()?
                .lines()
                .map(|s| s.trim().to_string())
                .collect();
            Some((job.to_string(), tasks))
        })
        .collect()
}

/// Expand `12_[0-3,5%2]` / `12_7` into (job, index) pairs.
fn array_tasks(id: &str) -> Vec<(String, usize)> {
    let Some((job, rest)) = id.split_once('_') else {
        return Vec::new();
    };
    let rest = rest.trim_start_matches('[').trim_end_matches(']');
    let rest = rest.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in rest.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            out.extend((a..=b.min(a + 100_000)).map(|k| (job.to_string(), k)));
        }
    }
    out
}

/// Slurm's view of the submitted tasks: lead unit id → state (from squeue, then sacct).
fn slurm_states(dir: &Path) -> (HashMap<String, String>, Vec<String>) {
    let jobs = jobs(dir);
    let mut states = HashMap::new();
    let mut notes = Vec::new();
    if jobs.is_empty() {
        return (states, notes);
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
    let lead = |job: &str, k: usize| {
        jobs.iter()
            .find(|j| j.0 == job)
            .and_then(|j| j.1.get(k).cloned())
    };
    // sacct first (finished tasks: FAILED, TIMEOUT, PREEMPTED ...), then squeue (live state).
    match Command::new("sacct")
        .args(["-n", "-P", "-X", "-o", "JobID,State", "-j", &ids.join(",")])
        .output()
    {
        Ok(o) if o.status.success() => {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let Some((id, st)) = l.split_once('|') else {
                    continue;
                };
                for (job, k) in array_tasks(id) {
                    if let Some(u) = lead(&job, k) {
                        states.insert(u, st.split_whitespace().next().unwrap_or(st).to_lowercase());
                    }
                }
            }
        }
        _ => notes.push("sacct unavailable (no accounting database): finished tasks are known from their result files".into()),
    }
    match Command::new("squeue")
        .args(["-h", "-r", "-o", "%i|%T", "-j", &ids.join(",")])
        .output()
    {
        Ok(o) => {
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                let Some((id, st)) = l.split_once('|') else {
                    continue;
                };
                for (job, k) in array_tasks(id.trim()) {
                    if let Some(u) = lead(&job, k) {
                        states.insert(u, st.trim().to_lowercase());
                    }
                }
            }
        }
        Err(_) => notes.push("squeue not found: states come from the result files only".into()),
    }
    (states, notes)
}

/// What `status` reads once: the results, the merged ids, and Slurm's view.
struct Seen {
    loaded: store::Loaded,
    merged_ids: std::collections::HashSet<String>,
    /// The progress of runs training in packs, from their packs' checkpoints.
    packed: HashMap<String, crate::train::CheckpointMeta>,
    slurm: HashMap<String, String>,
    notes: Vec<String>,
}

impl Seen {
    fn read(dir: &Path) -> anyhow::Result<Seen> {
        let loaded = store::load(dir)?;
        let merged_ids = store::merged_run_ids(dir)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let (slurm, notes) = slurm_states(dir);
        let packed = crate::train::packed_progress(&dir.join(crate::fsio::CHECKPOINTS_DIR));
        Ok(Seen {
            loaded,
            merged_ids,
            packed,
            slurm,
            notes,
        })
    }
}

/// One line per run: pending / queued / running / done / failed / diverged.
pub fn status(p: &Prepared) -> anyhow::Result<String> {
    use std::fmt::Write;
    let seen = Seen::read(&p.out_dir)?;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:<14} {:>4} {:>10} {:>10} {:<10} detail",
        "run_id", "shape", "seed", "D", "budget", "state"
    );
    for r in &p.plan.runs {
        let (state, detail) = run_state(p, r, &seen);
        *counts.entry(state.clone()).or_default() += 1;
        let _ = writeln!(
            s,
            "{:<16} {:<14} {:>4} {:>10} {:>10} {:<10} {}",
            r.id,
            r.shape.label(),
            r.data.seed,
            r.tokens,
            r.budget.map_or_else(|| "-".into(), |b| format!("{b:.2e}")),
            state,
            detail
        );
    }
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(s, "{} runs: {}", p.plan.runs.len(), summary.join(", "));
    for n in &seen.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for u in &seen.loaded.unreadable {
        let _ = writeln!(s, "warning: unreadable result file {u}");
    }
    Ok(s)
}

/// "; predicted final train loss X [lo, hi]" for a run past [`crate::fit::curve::MIN_FRACTION`]
/// of its steps: the Multi-Power Law fitted on its curve so far (train loss over blocks of 2% of
/// the run), with its whole planned schedule, and a 30-resample residual-bootstrap interval.
/// Empty before that or when the fit fails.
fn predicted_final(r: &crate::plan::RunPlan, curve: &[crate::record::CurveRow]) -> String {
    let per_step: Vec<(usize, f64)> = curve.iter().map(|c| (c.step, c.train_loss)).collect();
    match crate::curves::predict_run_final(&r.lr_schedule(), &per_step, 30) {
        Some(p) => {
            let ci =
                p.ci.map(|[lo, hi]| format!(" [{lo:.3}, {hi:.3}]"))
                    .unwrap_or_default();
            format!(
                "; predicted final train loss {:.3}{ci} (Multi-Power Law)",
                p.loss
            )
        }
        None => String::new(),
    }
}

/// A run's state and detail, from its result, Slurm's word on its unit, its lock and its
/// checkpoint (its own, or its pack's).
fn run_state(p: &Prepared, r: &crate::plan::RunPlan, seen: &Seen) -> (String, String) {
    let lead = r.parent.clone().unwrap_or_else(|| r.id.clone());
    let done = seen.loaded.runs.iter().find(|x| x.run_id == r.id);
    let ckpt_dir = p.out_dir.join(crate::fsio::CHECKPOINTS_DIR);
    // Its own checkpoint or its pack's, whichever is further (the one its next attempt, alone
    // or packed as before, resumes from).
    let own = crate::train::checkpoint_meta(&ckpt_dir.join(format!("{}.ckpt", r.id)));
    let ckpt = match (own, seen.packed.get(&r.id)) {
        (Some(o), Some(p)) if p.step > o.step => Some(p.clone()),
        (own, packed) => own.or_else(|| packed.cloned()),
    };
    let at_step = |what: &str| {
        ckpt.as_ref()
            .map(|c| {
                format!(
                    "{what} {}/{}{}",
                    c.step,
                    r.data.steps,
                    predicted_final(r, &c.curve)
                )
            })
            .unwrap_or_default()
    };
    match (done, seen.slurm.get(&lead)) {
        (Some(d), _) if d.status == Status::Ok => (
            "done".to_string(),
            format!(
                "eval {:.4}{}",
                d.eval_loss,
                if seen.merged_ids.contains(&r.id) {
                    ""
                } else {
                    " (not collected yet)"
                }
            ),
        ),
        (Some(d), _) if d.status == Status::Diverged => ("diverged".into(), String::new()),
        (Some(d), _) if d.status == Status::Pruned => (
            "pruned".into(),
            format!(
                "at step {}/{}; predicted final eval {}",
                d.steps_done,
                d.steps,
                d.predicted_eval_loss
                    .map_or("?".into(), |l| format!("{l:.4}"))
            ),
        ),
        (_, Some(st))
            if st == "running" || st == "pending" || st == "requeued" || st == "completing" =>
        {
            let st = if st == "pending" {
                "queued"
            } else {
                st.as_str()
            };
            (st.to_string(), at_step("checkpoint at step"))
        }
        (Some(d), _) => ("failed".into(), d.error.chars().take(80).collect()),
        (None, Some(st)) if st != "completed" => {
            ("failed".into(), format!("slurm: {st}; resubmit to retry"))
        }
        (None, _) if crate::fsio::UnitLock::is_held(&p.out_dir, &lead) => {
            ("running".into(), at_step("checkpoint at step"))
        }
        (None, _) => ("pending".into(), at_step("interrupted; resumes from step")),
    }
}

/// Merge per-run result files into `runs.parquet` and `curves.parquet` (see
/// [`sweep::merge_results`]); returns what to print.
pub fn collect(dir: &Path) -> anyhow::Result<String> {
    // The sweep's metadata (spec hash, corpus): from the merged table, or from a per-run
    // file when that table is missing or damaged.
    let sources: Vec<PathBuf> = std::iter::once(dir.join(store::RUNS_FILE))
        .filter(|p| p.exists())
        .chain(store::parquet_files(&dir.join(store::RUN_FILES_DIR)))
        .collect();
    if sources.is_empty() {
        bail_user!(
            "no results in {}: expected runs.parquet or runs/<run-id>.parquet files (is this a sweep's results folder?)",
            dir.display()
        );
    }
    let meta = sources
        .iter()
        .find_map(|p| store::read_metadata(p).ok().filter(|m| !m.is_empty()))
        .unwrap_or_default();
    let set_aside = store::set_aside_damaged_tables(dir)?;
    let st = sweep::merge_results(dir, meta, sweep::MergeWhen::Always)?.store;
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &st.runs {
        *by.entry(r.status.as_str()).or_default() += 1;
    }
    let mut msg = format!(
        "collected {} runs from {} per-run files into {} and {}: {}\n",
        st.runs.len(),
        st.run_files,
        dir.join(store::RUNS_FILE).display(),
        store::CURVES_FILE,
        by.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for u in &st.unreadable {
        msg += &format!("warning: skipped unreadable file {u}\n");
    }
    for n in set_aside {
        msg += &format!("note: {n}\n");
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_squeue_array_ids() {
        assert_eq!(
            array_tasks("12_[0-2,5%2]"),
            vec![
                ("12".to_string(), 0),
                ("12".into(), 1),
                ("12".into(), 2),
                ("12".into(), 5)
            ]
        );
        assert_eq!(array_tasks("7_3"), vec![("7".to_string(), 3)]);
        assert!(array_tasks("7").is_empty());
    }

    /// `status` lists every planned run with its own seed, D and budget; before anything ran,
    /// each is pending.
    #[test]
    fn status_lists_each_run_with_its_seed_and_budget() {
        let out = std::env::temp_dir().join(format!("scalelab-status-{}", std::process::id()));
        let src = crate::spec::SpecSource::from_file(Path::new("sweeps/quick.yaml")).unwrap();
        let p = crate::sweep::prepare(src, Some(out), None).unwrap();
        let s = status(&p).unwrap();
        let head: Vec<&str> = s.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            head[..6],
            ["run_id", "shape", "seed", "D", "budget", "state"]
        );
        let seeds: std::collections::BTreeSet<u64> =
            p.plan.runs.iter().map(|r| r.data.seed).collect();
        assert_eq!(seeds.len(), 4, "quick has four seeds");
        for r in &p.plan.runs {
            let line = s.lines().find(|l| l.starts_with(r.id.as_str())).unwrap();
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols[2], r.data.seed.to_string(), "{line}");
            assert_eq!(cols[3], r.tokens.to_string(), "{line}");
            assert_eq!(cols[4], format!("{:.2e}", r.budget.unwrap()), "{line}");
            assert_eq!(cols[5], "pending", "{line}");
        }
        let n = p.plan.runs.len();
        assert!(s.contains(&format!("{n} runs: {n} pending")), "{s}");
    }

    #[test]
    fn flags_override_spec_and_quote_paths() {
        let spec = SlurmSpec {
            partition: Some("a".into()),
            time: Some("01:00:00".into()),
            extra: vec!["--qos=x".into()],
            ..Default::default()
        };
        let flags = SlurmSpec {
            partition: Some("b".into()),
            ..Default::default()
        };
        let m = merged(&flags, &spec);
        assert_eq!(m.partition.as_deref(), Some("b"));
        assert_eq!(m.time.as_deref(), Some("01:00:00"));
        assert_eq!(sh("it's"), r"'it'\''s'");
    }
}
