//! `--device auto|cpu|cuda[:N]`, shared by every stage.
//!
//! ```
//! use mat_core::device::DeviceSpec;
//! let spec: DeviceSpec = "cuda:1".parse().unwrap();
//! assert_eq!(spec, DeviceSpec::Cuda(1));
//! assert!("gpu".parse::<DeviceSpec>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{Error, Result};

/// Which device a stage runs on, as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The first CUDA device when the binary was built with `cuda` and one is
    /// present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| Error::Device(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device. Asking for CUDA from a build without the `cuda`
    /// feature is an error that says how to get one, not a silent CPU run.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            // A CUDA build on a machine whose driver sees no GPU runs on
            // the CPU.
            DeviceSpec::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Ok(Device::new_cuda(0).unwrap_or(Device::Cpu))
                } else {
                    Ok(Device::Cpu)
                }
            }
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(Error::Invalid(format!(
                        "--device cuda:{n} asked for, but this binary was built without CUDA; build the CUDA programs with `just build-cuda` (README, \"Devices and randomness\")"
                    )));
                }
                Device::new_cuda(n).map_err(|e| {
                    // The driver's error, without the backtrace candle
                    // attaches under RUST_BACKTRACE.
                    let e = match e {
                        candle_core::Error::WithBacktrace { inner, .. } => *inner,
                        e => e,
                    };
                    Error::Invalid(format!(
                        "--device cuda:{n}: cannot open the GPU ({e}); `nvidia-smi` lists the GPUs the driver sees"
                    ))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "gpu", "cuda:", "cuda:x", "CPU"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("expected `auto`, `cpu`"), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["auto", "cpu", "cuda:0", "cuda:2"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn cpu_and_auto_open_without_cuda() {
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
        if !candle_core::utils::cuda_is_available() {
            assert!(DeviceSpec::Auto.open().unwrap().is_cpu());
            assert!(DeviceSpec::Cuda(0).open().is_err());
        }
    }
}
