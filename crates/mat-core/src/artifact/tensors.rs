//! safetensors artifacts (centers, weights, checkpoints) with `__metadata__`.
//!
//! The file is what PyTorch's `safetensors.torch.load_file` reads; the
//! metadata holds the provenance keys of DESIGN.md (kind, arch, method, ...).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::atomic::write_atomic;
use super::Metadata;
use crate::error::{Error, IoContext, Result};

/// Writes named tensors and metadata to `path` atomically.
pub fn write_tensors<'a, I>(path: &Path, tensors: I, metadata: &Metadata) -> Result<()>
where
    I: IntoIterator<Item = (&'a str, &'a Tensor)>,
{
    let mut owned = Vec::new();
    for (name, t) in tensors {
        // safetensors wants dense CPU bytes; moving here keeps the View impl
        // from failing half-way through a write.
        let t = t.to_device(&Device::Cpu)?.contiguous()?;
        owned.push((name.to_string(), t));
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(owned.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| Error::format(path, format!("cannot serialise tensors: {e}")))?;
    let bytes = sorted_header(&bytes)
        .map_err(|e| Error::format(path, format!("cannot serialise tensors: {e}")))?;
    write_atomic(path, &bytes)
}

/// The same safetensors file with its JSON header's keys (and the
/// metadata's) in sorted order. The crate writes the metadata from a
/// `HashMap`, whose order changes from run to run: identical weights got
/// new bytes, and every stage downstream of them ran again.
fn sorted_header(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    use serde_json::{Map, Value};
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("no header")?;
    let header = bytes.get(8..8 + n).ok_or("short header")?;
    let parsed: BTreeMap<String, Value> =
        serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut sorted = Map::new();
    for (k, v) in parsed {
        let v = match v {
            Value::Object(m) => {
                let inner: BTreeMap<String, Value> = m.into_iter().collect();
                Value::Object(inner.into_iter().collect())
            }
            other => other,
        };
        sorted.insert(k, v);
    }
    let mut text = serde_json::to_vec(&Value::Object(sorted)).map_err(|e| e.to_string())?;
    // The data that follows starts 8-aligned, as the crate writes it.
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// The first tensor of a float dtype holding NaN or ±inf, with the count:
/// a diverged model or a damaged file, never something to attack or report.
fn non_finite(st: &safetensors::SafeTensors) -> Option<(String, usize)> {
    use safetensors::Dtype;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).ok()?;
        let data = view.data();
        let bad = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                .count(),
            Dtype::F64 => data
                .chunks_exact(8)
                .filter(|c| !f64::from_le_bytes((*c).try_into().expect("8 bytes")).is_finite())
                .count(),
            // IEEE half formats: exponent bits all ones.
            Dtype::F16 => data
                .chunks_exact(2)
                .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00)
                .count(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .filter(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80)
                .count(),
            _ => 0,
        };
        if bad > 0 {
            return Some((name, bad));
        }
    }
    None
}

/// A safetensors file read into memory, with checked accessors.
#[derive(Debug)]
pub struct TensorFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: Metadata,
}

impl TensorFile {
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
        let metadata: Metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
        if let Some((name, count)) = non_finite(&st) {
            return Err(Error::Tensor {
                path: path.to_path_buf(),
                name,
                expected: "finite values".into(),
                found: format!(
                    "{count} NaN or infinite values (a diverged run, or a damaged file)"
                ),
            });
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| Error::format(path, format!("cannot load tensors: {e}")))?
            .into_iter()
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata,
        })
    }

    /// The tensor `name`, or an error listing the tensors the file has.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            name: name.to_string(),
            expected: "a tensor of that name".into(),
            found: format!(
                "none (the file has: {})",
                self.tensors.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// The tensor `name`, checked against a dtype and a shape in which
    /// `None` matches any size.
    pub fn expect(&self, name: &str, dtype: DType, shape: &[Option<usize>]) -> Result<&Tensor> {
        let t = self.get(name)?;
        let dims = t.dims();
        let shape_ok = dims.len() == shape.len()
            && dims
                .iter()
                .zip(shape)
                .all(|(d, s)| s.is_none_or(|s| s == *d));
        if !shape_ok || t.dtype() != dtype {
            return Err(Error::Tensor {
                path: self.path.clone(),
                name: name.to_string(),
                expected: format!("{dtype:?} {}", shape_pattern(shape)),
                found: format!("{:?} {dims:?}", t.dtype()),
            });
        }
        Ok(t)
    }

    /// A metadata value that must be present.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::Metadata {
                path: self.path.clone(),
                key: key.to_string(),
                expected: "a value".into(),
                found: "no such key".into(),
            })
    }
}

fn shape_pattern(shape: &[Option<usize>]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("_".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        [("kind", "centers"), ("num_classes", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trip_keeps_values_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let a = Tensor::arange(0f32, 6., &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let b = Tensor::new(&[7u32, 8], &Device::Cpu).unwrap();
        // A transposed (non-contiguous) view must be written densely.
        let at = a.t().unwrap();
        write_tensors(&path, [("a", &a), ("b", &b), ("at", &at)], &meta()).unwrap();
        let f = TensorFile::read(&path, &Device::Cpu).unwrap();
        assert_eq!(f.metadata, meta());
        let a2 = f.expect("a", DType::F32, &[Some(2), None]).unwrap();
        assert_eq!(a2.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        assert_eq!(
            f.get("at").unwrap().to_vec2::<f32>().unwrap(),
            at.to_vec2::<f32>().unwrap()
        );
        assert_eq!(f.get("b").unwrap().to_vec1::<u32>().unwrap(), vec![7, 8]);
        assert_eq!(f.meta("kind").unwrap(), "centers");
    }

    #[test]
    fn wrong_shape_dtype_or_name_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = Tensor::zeros((10, 9), DType::F32, &Device::Cpu).unwrap();
        write_tensors(&path, [("centers", &a)], &meta()).unwrap();
        let f = TensorFile::read(&path, &Device::Cpu).unwrap();

        let err = f
            .expect("centers", DType::F32, &[Some(10), Some(256)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("w.safetensors"), "{err}");
        assert!(err.contains("tensor `centers`"), "{err}");
        assert!(
            err.contains("expected F32 [10, 256], found F32 [10, 9]"),
            "{err}"
        );

        let err = f
            .expect("centers", DType::U32, &[None, None])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected U32 [_, _], found F32 [10, 9]"),
            "{err}"
        );

        let err = f.get("weight").unwrap_err().to_string();
        assert!(err.contains("the file has: centers"), "{err}");

        let err = f.meta("arch").unwrap_err().to_string();
        assert!(err.contains("metadata `arch`"), "{err}");
    }

    #[test]
    fn garbage_is_a_format_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"\x10\0\0\0\0\0\0\0{not json at all").unwrap();
        let err = TensorFile::read(&path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.safetensors: not a valid safetensors file"),
            "{err}"
        );
        let err = TensorFile::read(&dir.path().join("none"), &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
    }
}
