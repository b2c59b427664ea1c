//! `mat inspect FILE`: a plain-text view of any artifact.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, UInt32Type};
use candle_core::{DType, Device};

use super::{Table, TensorFile};
use crate::error::{Error, IoContext, Result};

/// How many rows `inspect` prints.
pub const HEAD_ROWS: usize = 5;
/// Integer columns with at most this many distinct values get a histogram.
const HISTOGRAM_MAX_DISTINCT: usize = 32;

/// The report for `path`, chosen by the file's magic bytes.
pub fn inspect(path: &Path) -> Result<String> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).at(path)?;
    let n = f.read(&mut magic).at(path)?;
    if n == 4 && &magic == b"PAR1" {
        inspect_parquet(path)
    } else if path.extension().is_some_and(|e| e == "safetensors") || n == 4 {
        inspect_safetensors(path).map_err(|e| match e {
            Error::Format { .. } if path.extension().is_none_or(|e| e != "safetensors") => {
                Error::format(
                    path,
                    "neither a Parquet file (no PAR1 magic) nor a safetensors file",
                )
            }
            e => e,
        })
    } else {
        Err(Error::format(path, "too short to be an artifact"))
    }
}

#[derive(Default)]
struct Moments {
    n: usize,
    min: f64,
    max: f64,
    sum: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        if self.n == 0 {
            self.min = x;
            self.max = x;
        }
        self.n += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.sum += x;
    }

    fn line(&self) -> String {
        if self.n == 0 {
            return "empty".into();
        }
        format!(
            "min {:.6}  max {:.6}  mean {:.6}",
            self.min,
            self.max,
            self.sum / self.n as f64
        )
    }
}

fn moments_of(values: impl Iterator<Item = f64>) -> Moments {
    let mut m = Moments::default();
    values.for_each(|x| m.add(x));
    m
}

fn float_values(col: &ArrayRef) -> Option<Box<dyn Iterator<Item = f64> + '_>> {
    Some(match col.data_type() {
        DataType::Float32 => Box::new(
            col.as_primitive::<Float32Type>()
                .iter()
                .flatten()
                .map(f64::from),
        ),
        DataType::Float64 => Box::new(col.as_primitive::<Float64Type>().iter().flatten()),
        DataType::UInt32 => Box::new(
            col.as_primitive::<UInt32Type>()
                .iter()
                .flatten()
                .map(f64::from),
        ),
        DataType::Int64 => Box::new(
            col.as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .map(|x| x as f64),
        ),
        _ => return None,
    })
}

fn integer_values(col: &ArrayRef) -> Option<Vec<i64>> {
    match col.data_type() {
        DataType::UInt32 => Some(
            col.as_primitive::<UInt32Type>()
                .iter()
                .flatten()
                .map(i64::from)
                .collect(),
        ),
        DataType::Int64 => Some(col.as_primitive::<Int64Type>().iter().flatten().collect()),
        _ => None,
    }
}

fn cell(col: &ArrayRef, row: usize) -> String {
    if let Some(list) = col.as_any().downcast_ref::<FixedSizeListArray>() {
        let v = list.value(row);
        let shown: Vec<String> = match v.data_type() {
            DataType::Float32 => v
                .as_primitive::<Float32Type>()
                .iter()
                .take(3)
                .map(|x| format!("{:.4}", x.unwrap_or(f32::NAN)))
                .collect(),
            _ => vec!["…".into()],
        };
        return format!("[{} values: {}, …]", list.value_length(), shown.join(", "));
    }
    arrow::util::display::array_value_to_string(col, row).unwrap_or_else(|_| "?".into())
}

fn type_name(col_type: &DataType) -> String {
    match col_type {
        DataType::FixedSizeList(item, n) => format!("FixedSizeList<{}>[{n}]", item.data_type()),
        t => t.to_string(),
    }
}

fn write_metadata(out: &mut String, metadata: &BTreeMap<String, String>) {
    let _ = writeln!(out, "metadata ({} keys):", metadata.len());
    for (k, v) in metadata {
        // Long values (a whole config) are cut so the report stays readable.
        let v = if v.chars().count() > 200 {
            format!(
                "{}… ({} chars)",
                v.chars().take(200).collect::<String>(),
                v.len()
            )
        } else {
            v.clone()
        };
        let _ = writeln!(out, "  {k} = {v}");
    }
}

fn inspect_parquet(path: &Path) -> Result<String> {
    let t = Table::read(path)?;
    let mut out = String::new();
    let schema = t.batch.schema();
    let _ = writeln!(
        out,
        "{}: Parquet, {} rows, {} columns",
        path.display(),
        t.num_rows(),
        schema.fields().len()
    );
    let _ = writeln!(out, "schema:");
    for f in schema.fields() {
        let shape = t
            .shape_of(f.name())
            .map(|s| format!("  shape {s:?}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<20} {}{shape}",
            f.name(),
            type_name(f.data_type())
        );
    }
    let meta: BTreeMap<_, _> = t
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("shape:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    write_metadata(&mut out, &meta);
    let _ = writeln!(out, "summary:");
    for (f, col) in schema.fields().iter().zip(t.batch.columns()) {
        let line = if let Some(list) = col.as_any().downcast_ref::<FixedSizeListArray>() {
            match float_values(list.values()) {
                Some(vals) => format!("over all values: {}", moments_of(vals).line()),
                None => "list of non-numeric values".into(),
            }
        } else if let Some(vals) = float_values(col) {
            moments_of(vals).line()
        } else if col.data_type() == &DataType::Boolean {
            let b = col.as_boolean();
            format!(
                "{} true, {} false",
                b.true_count(),
                b.len() - b.true_count() - b.null_count()
            )
        } else if col.data_type() == &DataType::Utf8 {
            let mut distinct: Vec<&str> = col.as_string::<i32>().iter().flatten().collect();
            distinct.sort_unstable();
            distinct.dedup();
            format!("{} distinct", distinct.len())
        } else {
            String::new()
        };
        let _ = writeln!(out, "  {:<20} {line}", f.name());
        if let Some(ints) = integer_values(col) {
            let mut hist: BTreeMap<i64, usize> = BTreeMap::new();
            for v in ints {
                *hist.entry(v).or_default() += 1;
            }
            if hist.len() <= HISTOGRAM_MAX_DISTINCT && f.name() != "index" {
                let bins: Vec<String> = hist.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                let _ = writeln!(out, "  {:<20} histogram {{{}}}", "", bins.join(", "));
            }
        }
    }
    let head = t.num_rows().min(HEAD_ROWS);
    let _ = writeln!(out, "first {head} rows:");
    for row in 0..head {
        let cells: Vec<String> = schema
            .fields()
            .iter()
            .zip(t.batch.columns())
            .map(|(f, col)| format!("{}={}", f.name(), cell(col, row)))
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  "));
    }
    Ok(out)
}

fn inspect_safetensors(path: &Path) -> Result<String> {
    let f = TensorFile::read(path, &Device::Cpu)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: safetensors, {} tensors",
        path.display(),
        f.tensors.len()
    );
    write_metadata(&mut out, &f.metadata);
    let _ = writeln!(out, "tensors:");
    for (name, t) in &f.tensors {
        let stats = if t.dtype().is_float() && t.elem_count() > 0 {
            let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            moments_of(v.into_iter()).line()
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<32} {:<5} {:<18} {stats}",
            name,
            format!("{:?}", t.dtype()),
            format!("{:?}", t.dims())
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{write_table, write_tensors, Columns, Metadata};
    use candle_core::Tensor;

    #[test]
    fn parquet_report_has_schema_metadata_summary_histogram_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adv.parquet");
        let meta: Metadata = [("attack".to_string(), "pgd".to_string())].into();
        let cols = Columns::new()
            .u32("index", vec![0, 1, 2])
            .u32("label", vec![7, 7, 1])
            .f32("l2", vec![0.5, 1.5, 1.0])
            .f32_list(
                "image",
                vec![0.0, 0.25, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                &[1, 2, 2],
            );
        write_table(&path, cols, meta).unwrap();
        let r = inspect(&path).unwrap();
        assert!(r.contains("Parquet, 3 rows, 4 columns"), "{r}");
        assert!(
            r.contains("FixedSizeList<Float32>[4]  shape [1, 2, 2]"),
            "{r}"
        );
        assert!(r.contains("attack = pgd"), "{r}");
        assert!(
            r.contains("min 0.500000  max 1.500000  mean 1.000000"),
            "{r}"
        );
        assert!(r.contains("histogram {1: 1, 7: 2}"), "{r}");
        assert!(
            r.contains("image=[4 values: 0.0000, 0.2500, 0.5000, …]"),
            "{r}"
        );
    }

    #[test]
    fn safetensors_report_lists_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let t = Tensor::new(&[[1f32, -1.0], [3.0, 1.0]], &Device::Cpu).unwrap();
        write_tensors(
            &path,
            [("centers", &t)],
            &[("kind".to_string(), "centers".to_string())].into(),
        )
        .unwrap();
        let r = inspect(&path).unwrap();
        assert!(r.contains("safetensors, 1 tensors"), "{r}");
        assert!(r.contains("kind = centers"), "{r}");
        assert!(
            r.contains("centers") && r.contains("F32") && r.contains("[2, 2]"),
            "{r}"
        );
        assert!(
            r.contains("min -1.000000  max 3.000000  mean 1.000000"),
            "{r}"
        );
    }

    #[test]
    fn other_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello world, this is text").unwrap();
        let err = inspect(&path).unwrap_err().to_string();
        assert!(err.contains("notes.txt: neither a Parquet file"), "{err}");
    }
}
