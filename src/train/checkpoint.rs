//! Checkpoints: the file a run (or a pack of runs) leaves every M steps so that a killed or
//! preempted process resumes it where it stopped.
//!
//! Owns the checkpoint files' layout (a magic line, then three length-prefixed parts: the
//! metadata, the model record, the optimizer state), their metadata (a single run's
//! [`CheckpointMeta`], a pack's [`PackProgress`]), where they live and when they go
//! ([`Checkpointing`]), and a single run's resume and save. A pack's tensors are written and
//! read by [`super::pack`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::Segment;
use crate::lm::Lm;
use crate::record::CurveRow;

/// A fresh start: step 0, nothing logged.
pub(super) fn fresh(id: &str) -> CheckpointMeta {
    CheckpointMeta {
        run_id: id.to_string(),
        step: 0,
        train_time: 0.0,
        wall_s: 0.0,
        last_loss: f64::NAN,
        curve: Vec::new(),
    }
}

/// Load `<id>.ckpt` into a freshly built model and optimizer when it exists, is readable, is
/// this run's and is at step ≤ `max_step`; otherwise keep the fresh ones (saying why).
pub(super) fn resume<B: AutodiffBackend, O: Optimizer<Lm<B>, B>>(
    ckpt: Option<&Checkpointing>,
    id: &str,
    max_step: usize,
    model: Lm<B>,
    optim: O,
    device: &B::Device,
) -> (Lm<B>, O, CheckpointMeta) {
    let Some(p) = ckpt.map(|c| c.path(id)).filter(|p| p.exists()) else {
        return (model, optim, fresh(id));
    };
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load_checkpoint(&p, model.clone(), optim.clone(), device)
    }));
    match loaded {
        Ok(Ok((m, o, meta))) if meta.run_id == id && meta.step <= max_step => {
            eprintln!(
                "scalelab: run {id} resumes from its checkpoint at step {}",
                meta.step
            );
            return (m, o, meta);
        }
        Ok(Err(e)) => eprintln!(
            "scalelab: ignoring unreadable checkpoint {} ({e}); run {id} starts afresh",
            p.display()
        ),
        _ => eprintln!(
            "scalelab: ignoring checkpoint {} (not usable for run {id}); it starts afresh",
            p.display()
        ),
    }
    (model, optim, fresh(id))
}

/// Save a checkpoint when `seg` has just reached a multiple of the interval. `before` is
/// the state the segment started from (earlier steps' curve and time).
pub(super) fn save_point<B: AutodiffBackend, O: Optimizer<Lm<B>, B>>(
    ckpt: Option<&Checkpointing>,
    id: &str,
    m: &Lm<B>,
    o: &O,
    seg: &Segment,
    before: &CheckpointMeta,
    start: Instant,
) {
    let Some(c) = ckpt.filter(|c| c.every > 0 && seg.steps_done % c.every == 0) else {
        return;
    };
    let mut curve = before.curve.clone();
    curve.extend_from_slice(&seg.curve);
    let meta = CheckpointMeta {
        run_id: id.to_string(),
        step: seg.steps_done,
        train_time: before.train_time + seg.train_time,
        wall_s: before.wall_s + start.elapsed().as_secs_f64(),
        last_loss: seg.last_loss,
        curve,
    };
    let p = c.path(id);
    if let Err(e) = save_checkpoint(&p, m, o, &meta) {
        eprintln!("scalelab: could not write checkpoint {}: {e}", p.display());
    }
    crate::fsio::failpoint("checkpoint-saved");
}

/// Where a run keeps its checkpoint and how often it writes it.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// Folder of `<run-id>.ckpt` files (`<results>/checkpoints/`).
    pub dir: PathBuf,
    /// Steps between checkpoints (0: never).
    pub every: usize,
    /// Keep the checkpoint after the run finishes.
    pub keep: bool,
}

impl Checkpointing {
    pub fn path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.ckpt"))
    }

    /// The checkpoint of the pack whose first run is `lead_id` (every run of a pack is in one
    /// file: the pack's stacked model and optimizer, each run's progress).
    pub fn pack_path(&self, lead_id: &str) -> PathBuf {
        self.dir.join(format!("{lead_id}.{PACK_EXTENSION}"))
    }

    /// Delete the checkpoints of runs whose results are stored (unless they are kept): their
    /// own files and, for a pack, the pack's. The executor calls it only after the results are
    /// on disk, so a kill in between loses no training.
    pub fn remove(&self, run_ids: &[&str], pack_lead: Option<&str>) {
        if self.keep {
            return;
        }
        for id in run_ids {
            let _ = std::fs::remove_file(self.path(id));
        }
        if let Some(lead) = pack_lead {
            let _ = std::fs::remove_file(self.pack_path(lead));
        }
    }
}

/// How a pack's checkpoint file name ends.
pub const PACK_EXTENSION: &str = "pack.ckpt";

/// The magic line of a single run's checkpoint file.
const RUN_MAGIC: &[u8; 8] = b"SLCKPT1\n";

/// Everything but the tensors: where the run is and what it has logged so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub run_id: String,
    /// Optimizer steps done; training resumes at this step (the LR schedule and the data
    /// order are functions of the step).
    pub step: usize,
    pub train_time: f64,
    pub wall_s: f64,
    pub last_loss: f64,
    pub curve: Vec<CurveRow>,
}

/// Read just the metadata of a single run's checkpoint (for `status`).
pub fn checkpoint_meta(path: &Path) -> Option<CheckpointMeta> {
    serde_json::from_slice(&read_meta_part(path, RUN_MAGIC)?).ok()
}

/// The first part (the metadata) of a checkpoint file, without reading the tensors.
fn read_meta_part(path: &Path, magic: &[u8; 8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 16];
    f.read_exact(&mut head).ok()?;
    if &head[..8] != magic {
        return None;
    }
    let n = u64::from_le_bytes(head[8..].try_into().unwrap());
    let mut meta = Vec::new();
    f.take(n).read_to_end(&mut meta).ok()?;
    (meta.len() as u64 == n).then_some(meta)
}

/// The magic line of a pack's checkpoint file.
pub(super) const PACK_MAGIC: &[u8; 8] = b"SLPACK1\n";

/// Where a pack stands: what its checkpoint keeps besides the model and the optimizer
/// (MessagePack, which keeps the NaN losses of a diverged run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackProgress {
    /// The pack's runs, in order: a checkpoint resumes only the same runs in the same order.
    pub run_ids: Vec<String>,
    /// Steps trained: the pack resumes at this step.
    pub step: usize,
    /// Seconds spent in training steps, and in all, before this process took the pack up.
    pub(super) train_time: f64,
    pub(super) wall_s: f64,
    /// Each run's progress: status, last loss, curve, latest eval by position.
    pub(super) segs: Vec<Segment>,
}

impl PackProgress {
    /// Nothing trained yet.
    pub(super) fn fresh(run_ids: Vec<String>) -> Self {
        PackProgress {
            segs: run_ids.iter().map(|_| Segment::fresh()).collect(),
            run_ids,
            step: 0,
            train_time: 0.0,
            wall_s: 0.0,
        }
    }

    /// Run `id`'s progress in a single run's terms (for `status`).
    pub fn run_meta(&self, id: &str) -> Option<CheckpointMeta> {
        let k = self.run_ids.iter().position(|r| r == id)?;
        let seg = &self.segs[k];
        Some(CheckpointMeta {
            run_id: id.to_string(),
            step: seg.steps_done,
            train_time: seg.train_time,
            wall_s: self.wall_s,
            last_loss: seg.last_loss,
            curve: seg.curve.clone(),
        })
    }
}

/// Read just the progress of a pack's checkpoint.
pub fn pack_progress(path: &Path) -> Option<PackProgress> {
    rmp_serde::from_slice(&read_meta_part(path, PACK_MAGIC)?).ok()
}

/// The progress of every pack checkpoint in `dir` (the checkpoints folder).
pub fn pack_checkpoints(dir: &Path) -> Vec<PackProgress> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let suffix = format!(".{PACK_EXTENSION}");
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        .filter_map(|e| pack_progress(&e.path()))
        .collect()
}

/// Each run with progress in a pack checkpoint of `dir`, with it (the furthest, where a run
/// is in two packs' files).
pub fn packed_progress(dir: &Path) -> std::collections::HashMap<String, CheckpointMeta> {
    let mut out: std::collections::HashMap<String, CheckpointMeta> = Default::default();
    for p in pack_checkpoints(dir) {
        for m in p.run_ids.iter().filter_map(|id| p.run_meta(id)) {
            if out.get(&m.run_id).is_none_or(|o| o.step < m.step) {
                out.insert(m.run_id.clone(), m);
            }
        }
    }
    out
}

/// Write `magic`, then the three parts (metadata, model record, optimizer record), each after
/// its length as a little-endian u64; atomically (a kill leaves the old file or the new one).
pub(super) fn write_parts(path: &Path, magic: &[u8; 8], parts: [&[u8]; 3]) -> anyhow::Result<()> {
    let mut out = Vec::with_capacity(32 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.extend_from_slice(magic);
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    crate::fsio::write_bytes_atomic(path, &out)
}

/// The three parts of a file [`write_parts`] wrote with `magic`.
pub(super) fn split_parts<'a>(bytes: &'a [u8], magic: &[u8; 8]) -> anyhow::Result<[&'a [u8]; 3]> {
    let take = |at: usize, n: usize| -> anyhow::Result<&[u8]> {
        bytes
            .get(at..at.saturating_add(n))
            .ok_or_else(|| anyhow::anyhow!("truncated checkpoint"))
    };
    anyhow::ensure!(
        take(0, 8)? == magic,
        "not a scalelab checkpoint of this kind"
    );
    let mut at = 8;
    let mut part = || -> anyhow::Result<&[u8]> {
        let n = u64::from_le_bytes(take(at, 8)?.try_into().unwrap()) as usize;
        let p = take(at + 8, n)?;
        at += 8 + n;
        Ok(p)
    };
    let parts = [part()?, part()?, part()?];
    anyhow::ensure!(at == bytes.len(), "trailing bytes in checkpoint");
    Ok(parts)
}

/// A record (a module's or an optimizer's) as bytes, at full precision.
pub(super) fn record_bytes<B: Backend, R: Record<B>>(record: R) -> anyhow::Result<Vec<u8>> {
    let rec = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    Ok(Recorder::<B>::record(&rec, record, ())?)
}

/// A record back from [`record_bytes`].
pub(super) fn record_from_bytes<B: Backend, R: Record<B>>(
    bytes: &[u8],
    device: &B::Device,
) -> anyhow::Result<R> {
    let rec = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    Ok(Recorder::<B>::load(&rec, bytes.to_vec(), device)?)
}

fn save_checkpoint<B: AutodiffBackend, O: Optimizer<Lm<B>, B>>(
    path: &Path,
    model: &Lm<B>,
    optim: &O,
    meta: &CheckpointMeta,
) -> anyhow::Result<()> {
    let m = record_bytes::<B, _>(model.clone().into_record())?;
    let o = record_bytes::<B, _>(optim.to_record())?;
    let j = serde_json::to_vec(meta)?;
    write_parts(path, RUN_MAGIC, [&j, &m, &o])
}

/// Load model and optimizer state from a checkpoint into freshly built ones.
fn load_checkpoint<B: AutodiffBackend, O: Optimizer<Lm<B>, B>>(
    path: &Path,
    model: Lm<B>,
    optim: O,
    device: &B::Device,
) -> anyhow::Result<(Lm<B>, O, CheckpointMeta)> {
    let bytes = std::fs::read(path)?;
    let [meta, m, o] = split_parts(&bytes, RUN_MAGIC)?;
    let meta: CheckpointMeta = serde_json::from_slice(meta)?;
    let mr = record_from_bytes::<B, _>(m, device)?;
    let or = record_from_bytes::<B, _>(o, device)?;
    Ok((model.load_record(mr), optim.load_record(or), meta))
}
