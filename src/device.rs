//! Devices and backends: which burn backend a run uses, and the CUDA pre-flight check.
//!
//! `cpu` is burn's `Flex` backend (pure Rust, multi-threaded through rayon). `cuda`/`cuda:K`
//! is burn-cuda, compiled only with the `cuda` cargo feature. burn's CUDA runtime panics on
//! the first op when the driver, NVRTC or the CUDA headers are missing, so [`check_cuda`]
//! looks for all three first and returns a clear error instead.

use crate::bail_user;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|k| k.parse().ok()) {
                Some(k) => Ok(DeviceChoice::Cuda(k)),
                None => bail_user!("unknown device {s:?}; use `cpu`, `cuda` or `cuda:K`"),
            },
        }
    }

    /// `cpu` or `cuda:K`.
    pub fn short_name(&self) -> String {
        match self {
            DeviceChoice::Cpu => "cpu".into(),
            DeviceChoice::Cuda(k) => format!("cuda:{k}"),
        }
    }

    /// Backend name recorded with results.
    pub fn backend_name(&self) -> String {
        match self {
            DeviceChoice::Cpu => "burn-flex (cpu)".into(),
            DeviceChoice::Cuda(k) => format!("burn-cuda (cuda:{k})"),
        }
    }

    /// Fail early, with a clear message, when this device cannot be used.
    pub fn ensure_usable(&self) -> anyhow::Result<()> {
        match self {
            DeviceChoice::Cpu => Ok(()),
            DeviceChoice::Cuda(_) => {
                if !cfg!(feature = "cuda") {
                    bail_user!(
                        "device `cuda` requested, but this scalelab was built without CUDA support; \
                         rebuild with `cargo build --release --features cuda`, or use `--device cpu`"
                    );
                }
                check_cuda()
            }
        }
    }
}

/// Whether a shared library can be loaded (dlopen, glibc ≥ 2.34 needs no -ldl).
fn can_dlopen(name: &str) -> bool {
    use std::ffi::{c_char, c_int, c_void, CString};
    extern "C" {
        fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
        fn dlclose(handle: *mut c_void) -> c_int;
    }
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: dlopen/dlclose with a valid NUL-terminated name; RTLD_LAZY = 1.
    unsafe {
        let h = dlopen(c.as_ptr(), 1);
        if h.is_null() {
            false
        } else {
            dlclose(h);
            true
        }
    }
}

/// Driver, NVRTC and headers, as burn-cuda needs them at run time.
pub fn check_cuda() -> anyhow::Result<()> {
    if !["libcuda.so.1", "libcuda.so"].iter().any(|l| can_dlopen(l)) {
        bail_user!(
            "no NVIDIA driver found (libcuda.so.1 cannot be loaded): this machine has no usable GPU. \
             Use `--device cpu`, or run on a machine with the NVIDIA driver installed"
        );
    }
    let nvrtc = [
        "libnvrtc.so",
        "libnvrtc.so.13",
        "libnvrtc.so.12",
        "libnvrtc.so.11.2",
    ];
    if !nvrtc.iter().any(|l| can_dlopen(l)) {
        bail_user!(
            "the NVIDIA driver is present but NVRTC (libnvrtc.so) is not: burn-cuda compiles its kernels \
             at run time with it. Install the CUDA toolkit (or its nvrtc package) and add its lib64 folder \
             to LD_LIBRARY_PATH"
        );
    }
    let has_headers = std::env::var_os("CUDA_PATH").is_some()
        || ["/usr/local/cuda", "/opt/cuda", "/usr/bin/nvcc"]
            .iter()
            .any(|p| std::path::Path::new(p).exists());
    if !has_headers {
        bail_user!(
            "CUDA headers not found: set CUDA_PATH to the CUDA toolkit folder (the one holding include/cuda.h), \
             or install the toolkit under /usr/local/cuda"
        );
    }
    Ok(())
}

/// Call `$body` with the backend type alias `$B` (an autodiff backend) and `$dev` (its device)
/// bound for the chosen device.
#[macro_export]
macro_rules! with_backend {
    ($choice:expr, |$B:ident, $dev:ident| $body:expr) => {{
        match $choice {
            $crate::device::DeviceChoice::Cpu => {
                type $B = burn::backend::Autodiff<burn::backend::Flex>;
                let $dev = burn::backend::flex::FlexDevice;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceChoice::Cuda(k) => {
                type $B = burn::backend::Autodiff<burn::backend::Cuda>;
                let $dev = burn::backend::cuda::CudaDevice::new(k);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::DeviceChoice::Cuda(_) => {
                unreachable!("ensure_usable rejects cuda without the feature")
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_devices() {
        assert_eq!(DeviceChoice::parse("cpu").unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            DeviceChoice::parse("cuda:3").unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert!(DeviceChoice::parse("tpu").is_err());
    }
}
