//! Datasheet peaks: the dense (no sparsity) FLOP/s NVIDIA states for its data-centre and a few
//! workstation GPUs, per training precision, so `scalelab bench` can give MFU against the
//! card's peak (the convention of PaLM's MFU) beside MFU against the measured matmul peak.
//!
//! f32 is the CUDA-core FP32 rate (not TF32 tensor cores); bf16 and f16 are the tensor-core
//! rates with FP32 accumulation. Figures are NVIDIA's product datasheets; a card missing here
//! gets no datasheet MFU (`bench --peak-tflops` gives one by hand).

use crate::spec::Precision;

/// One card: how `nvidia-smi` names it (every token must appear), its datasheet label, and
/// its dense TFLOP/s in f32, bf16 and f16 (`None`: no such tensor-core type).
struct Card {
    tokens: &'static [&'static str],
    label: &'static str,
    f32: f64,
    bf16: Option<f64>,
    f16: f64,
}

/// Name tokens of variants the table does not list (laptop parts, the 4090 D, Max-Q): such a
/// name gets no figure rather than its desktop sibling's.
const UNLISTED_VARIANTS: &[&str] = &["LAPTOP", "MOBILE", "MAX", "Q", "D"];

/// Most specific first: the first card whose tokens all appear in the name wins.
#[rustfmt::skip]
const CARDS: &[Card] = &[
    Card { tokens: &["H100", "PCIE"], label: "H100 PCIe", f32: 51.2, bf16: Some(756.0), f16: 756.0 },
    Card { tokens: &["H100", "NVL"], label: "H100 NVL", f32: 60.0, bf16: Some(835.0), f16: 835.0 },
    Card { tokens: &["H200", "NVL"], label: "H200 NVL", f32: 60.0, bf16: Some(835.0), f16: 835.0 },
    Card { tokens: &["H100"], label: "H100 SXM", f32: 67.0, bf16: Some(989.0), f16: 989.0 },
    Card { tokens: &["H200"], label: "H200 SXM", f32: 67.0, bf16: Some(989.0), f16: 989.0 },
    Card { tokens: &["GH200"], label: "GH200", f32: 67.0, bf16: Some(989.0), f16: 989.0 },
    Card { tokens: &["A100"], label: "A100", f32: 19.5, bf16: Some(312.0), f16: 312.0 },
    Card { tokens: &["L40S"], label: "L40S", f32: 91.6, bf16: Some(362.0), f16: 362.0 },
    Card { tokens: &["L4"], label: "L4", f32: 30.3, bf16: Some(121.0), f16: 121.0 },
    Card { tokens: &["A10"], label: "A10", f32: 31.2, bf16: Some(125.0), f16: 125.0 },
    Card { tokens: &["RTX", "4090"], label: "GeForce RTX 4090", f32: 82.6, bf16: Some(165.2), f16: 165.2 },
    Card { tokens: &["V100", "PCIE"], label: "V100 PCIe", f32: 14.0, bf16: None, f16: 112.0 },
    Card { tokens: &["V100"], label: "V100 SXM2", f32: 15.7, bf16: None, f16: 125.0 },
];

/// A card's datasheet peak at one precision.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasheetPeak {
    /// e.g. "H100 SXM datasheet, bf16 dense".
    pub source: String,
    pub flops: f64,
}

/// The datasheet peak of the card `nvidia-smi` calls `gpu_name` at `precision`; `None` for
/// a card not in the table or a precision it has no tensor cores for.
pub fn datasheet_peak(gpu_name: &str, precision: Precision) -> Option<DatasheetPeak> {
    // "NVIDIA A100-SXM4-80GB" → ["NVIDIA", "A100", "SXM4", "80GB"]: whole tokens, so "L4"
    // does not match an L40S nor "A10" an A100.
    let upper = gpu_name.to_ascii_uppercase();
    let tokens: Vec<&str> = upper.split([' ', '-', '_']).collect();
    if tokens.iter().any(|t| UNLISTED_VARIANTS.contains(t)) {
        return None;
    }
    let card = CARDS
        .iter()
        .find(|c| c.tokens.iter().all(|t| tokens.contains(t)))?;
    let tflops = match precision {
        Precision::F32 => card.f32,
        Precision::Bf16 => card.bf16?,
        Precision::F16 => card.f16,
    };
    Some(DatasheetPeak {
        source: format!("{} datasheet, {} dense", card.label, precision.as_str()),
        flops: tflops * 1e12,
    })
}

/// The name of the card CUDA device `index` runs on, when it can be told. `nvidia-smi` lists
/// cards in PCI order while CUDA may number them otherwise (`CUDA_DEVICE_ORDER`), and
/// `CUDA_VISIBLE_DEVICES` picks and renumbers them: so a name is given when the device is
/// picked by UUID or every card has the same name, and none for a MIG slice (a fraction of
/// the card's peak). `None` too when `nvidia-smi` does not run.
pub fn nvidia_gpu_name(index: usize) -> Option<String> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let picked = visible
        .as_deref()
        .and_then(|v| v.split(',').nth(index))
        .map(str::trim);
    let uuid = match picked {
        Some(id) if id.starts_with("MIG-") => return None,
        Some(id) if id.starts_with("GPU-") => Some(id),
        _ => None,
    };
    let mut cmd = std::process::Command::new("nvidia-smi");
    cmd.args(["--query-gpu=name,mig.mode.current", "--format=csv,noheader"]);
    if let Some(u) = uuid {
        cmd.arg(format!("--id={u}"));
    }
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    one_card(&String::from_utf8_lossy(&out.stdout))
}

/// The card's name from `nvidia-smi`'s `name, mig.mode.current` lines: the one name every
/// line has, unless MIG is on.
fn one_card(csv: &str) -> Option<String> {
    let rows: Vec<(&str, &str)> = csv
        .lines()
        .filter_map(|l| l.rsplit_once(','))
        .map(|(name, mig)| (name.trim(), mig.trim()))
        .collect();
    let first = rows.first()?.0;
    let same = rows.iter().all(|(n, _)| *n == first);
    let mig = rows.iter().any(|(_, m)| m.eq_ignore_ascii_case("enabled"));
    (same && !mig && !first.is_empty()).then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names as `nvidia-smi` prints them map to the right card, whole tokens only, and the
    /// figures are the datasheets' dense ones.
    #[test]
    fn nvidia_smi_names_map_to_their_datasheet_peaks() {
        let tf = |name: &str, p| datasheet_peak(name, p).map(|d| (d.flops / 1e12, d.source));
        let bf = Precision::Bf16;
        assert_eq!(
            tf("NVIDIA H100 80GB HBM3", bf),
            Some((989.0, "H100 SXM datasheet, bf16 dense".into()))
        );
        assert_eq!(tf("NVIDIA H100 PCIe", bf).unwrap().0, 756.0);
        assert_eq!(tf("NVIDIA H200", Precision::F32).unwrap().0, 67.0);
        assert_eq!(tf("NVIDIA H200 NVL", bf).unwrap().0, 835.0);
        assert_eq!(tf("NVIDIA A100-SXM4-80GB", bf).unwrap().0, 312.0);
        assert_eq!(tf("NVIDIA A100 80GB PCIe", Precision::F32).unwrap().0, 19.5);
        assert_eq!(tf("NVIDIA L40S", bf).unwrap().0, 362.0);
        assert_eq!(tf("NVIDIA L4", bf).unwrap().0, 121.0);
        assert_eq!(tf("NVIDIA A10", Precision::F16).unwrap().0, 125.0);
        assert_eq!(tf("NVIDIA GeForce RTX 4090", bf).unwrap().0, 165.2);
        // V100 has no bf16 tensor cores; unknown cards have no datasheet figure.
        assert_eq!(tf("Tesla V100-SXM2-16GB", bf), None);
        assert_eq!(tf("Tesla V100-SXM2-16GB", Precision::F16).unwrap().0, 125.0);
        assert_eq!(tf("Tesla V100-PCIE-16GB", Precision::F32).unwrap().0, 14.0);
        assert_eq!(tf("NVIDIA A10G", bf), None);
        assert_eq!(tf("NVIDIA GeForce RTX 4090 D", bf), None);
        assert_eq!(tf("NVIDIA GeForce RTX 4090 Laptop GPU", bf), None);
        assert_eq!(tf("NVIDIA GeForce RTX 3090", bf), None);
    }

    /// One card name only when every card has it and MIG is off (CUDA's numbering and
    /// nvidia-smi's may differ, and a MIG slice has a fraction of the peak).
    #[test]
    fn the_card_is_named_only_when_unambiguous() {
        let h100 = "NVIDIA H100 80GB HBM3, Disabled\nNVIDIA H100 80GB HBM3, Disabled\n";
        assert_eq!(one_card(h100).as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(one_card("NVIDIA L4, [N/A]\n").as_deref(), Some("NVIDIA L4"));
        assert_eq!(
            one_card("NVIDIA H100 80GB HBM3, Disabled\nNVIDIA L4, [N/A]\n"),
            None
        );
        assert_eq!(one_card("NVIDIA A100-SXM4-80GB, Enabled\n"), None);
        assert_eq!(one_card(""), None);
    }
}
