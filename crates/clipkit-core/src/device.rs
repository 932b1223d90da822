//! Where the model runs. CPU always; CUDA when built with the `cuda` feature.

use candle_core::Device;

use crate::error::Result;

/// Picks a device from a user-facing name: `cpu`, `cuda`, `cuda:N`.
pub fn device_from_name(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => Ok(Device::new_cuda(ordinal)?),
            _ => Err(crate::ClipError::Candle(candle_core::Error::Msg(format!(
                "unknown device `{other}` (expected cpu, cuda or cuda:N)"
            )))),
        },
    }
}
