//! Parquet artifacts: one row per sample, images and features as
//! `FixedSizeList<Float32>` columns, scalars as plain columns, provenance and
//! shapes in the file's key-value metadata. zstd-compressed; pandas, polars,
//! duckdb and pyarrow read them as they are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::atomic::AtomicFile;
use super::Metadata;
use crate::error::{Error, IoContext, Result};

/// Metadata key under which the shape of a list column's rows is recorded.
pub fn shape_key(column: &str) -> String {
    format!("shape:{column}")
}

/// The columns of one batch of rows, built in order.
#[derive(Default)]
pub struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
    shapes: Vec<(String, Vec<usize>)>,
}

impl Columns {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, name: &str, array: ArrayRef) -> Self {
        self.fields
            .push(Field::new(name, array.data_type().clone(), false));
        self.arrays.push(array);
        self
    }

    pub fn u32(self, name: &str, values: Vec<u32>) -> Self {
        self.push(name, Arc::new(UInt32Array::from(values)))
    }

    pub fn i64(self, name: &str, values: Vec<i64>) -> Self {
        self.push(name, Arc::new(Int64Array::from(values)))
    }

    pub fn f32(self, name: &str, values: Vec<f32>) -> Self {
        self.push(name, Arc::new(Float32Array::from(values)))
    }

    pub fn f64(self, name: &str, values: Vec<f64>) -> Self {
        self.push(name, Arc::new(Float64Array::from(values)))
    }

    pub fn bool(self, name: &str, values: Vec<bool>) -> Self {
        self.push(name, Arc::new(BooleanArray::from(values)))
    }

    pub fn string(self, name: &str, values: Vec<String>) -> Self {
        self.push(name, Arc::new(StringArray::from(values)))
    }

    /// A `FixedSizeList<Float32>` column: `values` holds the rows one after
    /// another, each of `shape.iter().product()` floats (an image `[C, H, W]`
    /// or a feature vector `[D]`). The shape goes into the file's metadata.
    pub fn f32_list(mut self, name: &str, values: Vec<f32>, shape: &[usize]) -> Self {
        let width: usize = shape.iter().product();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let array = FixedSizeListArray::new(
            item,
            width as i32,
            Arc::new(Float32Array::from(values)),
            None,
        );
        self.shapes.push((name.to_string(), shape.to_vec()));
        self.push(name, Arc::new(array))
    }
}

/// Metadata key of the content checksum: blake3 over the metadata and
/// every value, as decoded. The Parquet writer we use writes no page CRCs,
/// so this is what catches a flipped bit in data that still decodes.
pub const CONTENT_HASH: &str = "content_blake3";

/// Feeds the metadata (sorted, without the checksum itself) to `h`.
fn hash_metadata(h: &mut blake3::Hasher, metadata: &Metadata) {
    for (k, v) in metadata {
        if k != CONTENT_HASH && k != "ARROW:schema" {
            for part in [k.as_bytes(), b"\0", v.as_bytes(), b"\0"] {
                h.update(part);
            }
        }
    }
}

/// The content checksum, fed batch by batch: one hash per column over its
/// name, type and values (so neither the row groups a file was written in
/// nor the batches a reader returns change it), then one over the metadata
/// and the column hashes.
struct ContentHash {
    columns: Vec<blake3::Hasher>,
}

impl ContentHash {
    /// Starts from the schema, so a table of no rows has a checksum too.
    fn new(schema: &Schema) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                let mut h = blake3::Hasher::new();
                h.update(format!("{}\0{}\0", field.name(), field.data_type()).as_bytes());
                h
            })
            .collect();
        Self { columns }
    }

    fn add(&mut self, batch: &RecordBatch) -> std::result::Result<(), String> {
        let schema = batch.schema();
        if self.columns.len() != batch.num_columns() {
            return Err("a batch with another number of columns".into());
        }
        for (h, (field, col)) in self
            .columns
            .iter_mut()
            .zip(schema.fields().iter().zip(batch.columns()))
        {
            if col.null_count() > 0 {
                return Err(format!("column `{}` holds nulls", field.name()));
            }
            hash_values(h, field.name(), col)?;
        }
        Ok(())
    }

    fn finish(&self, metadata: &Metadata) -> String {
        let mut h = blake3::Hasher::new();
        hash_metadata(&mut h, metadata);
        for c in &self.columns {
            h.update(c.finalize().as_bytes());
        }
        h.finalize().to_hex().to_string()
    }
}

/// Feeds a column's values to `h`, in an encoding that does not depend on
/// how the arrays are laid out in memory.
fn hash_values(
    h: &mut blake3::Hasher,
    name: &str,
    col: &ArrayRef,
) -> std::result::Result<(), String> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float32Type, Float64Type, Int64Type, UInt32Type};
    {
        match col.data_type() {
            DataType::UInt32 => col
                .as_primitive::<UInt32Type>()
                .values()
                .iter()
                .for_each(|v| {
                    h.update(&v.to_le_bytes());
                }),
            DataType::Int64 => col
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .for_each(|v| {
                    h.update(&v.to_le_bytes());
                }),
            DataType::Float32 => col
                .as_primitive::<Float32Type>()
                .values()
                .iter()
                .for_each(|v| {
                    h.update(&v.to_bits().to_le_bytes());
                }),
            DataType::Float64 => col
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .for_each(|v| {
                    h.update(&v.to_bits().to_le_bytes());
                }),
            DataType::Boolean => col.as_boolean().values().iter().for_each(|v| {
                h.update(&[u8::from(v)]);
            }),
            DataType::Utf8 => col.as_string::<i32>().iter().for_each(|v| {
                let v = v.unwrap_or_default();
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }),
            DataType::FixedSizeList(item, width) if item.data_type() == &DataType::Float32 => {
                let list = col.as_fixed_size_list();
                let values = list.values().as_primitive::<Float32Type>().values();
                let start = if list.is_empty() {
                    0
                } else {
                    list.value_offset_at(0)
                };
                let end = start + list.len() * *width as usize;
                for v in values.get(start..end).ok_or("list values out of range")? {
                    h.update(&v.to_bits().to_le_bytes());
                }
            }
            other => {
                return Err(format!(
                    "column `{name}` has type {other}, which no artifact uses"
                ))
            }
        }
    }
    Ok(())
}

/// A Parquet file being written row group by row group; it appears under its
/// name only when [`finish`](TableWriter::finish) succeeds.
pub struct TableWriter {
    path: PathBuf,
    file: AtomicFile,
    writer: Option<ArrowWriter<std::fs::File>>,
    schema: Option<SchemaRef>,
    metadata: Metadata,
    content: Option<ContentHash>,
}

impl TableWriter {
    pub fn create(path: &Path, metadata: Metadata) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: AtomicFile::create(path)?,
            writer: None,
            schema: None,
            metadata,
            content: None,
        })
    }

    /// Appends a batch of rows. The first batch fixes the schema.
    pub fn write(&mut self, columns: Columns) -> Result<()> {
        if self.writer.is_none() {
            for (name, shape) in &columns.shapes {
                let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
                self.metadata
                    .insert(shape_key(name), format!("[{}]", dims.join(", ")));
            }
            let schema = Arc::new(Schema::new_with_metadata(
                columns.fields.clone(),
                self.metadata.clone(),
            ));
            let kv = self
                .metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect();
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(
                    ZstdLevel::try_new(3).expect("valid level"),
                ))
                .set_key_value_metadata(Some(kv))
                .build();
            let out = self.file.file().try_clone().at(&self.path)?;
            let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))
                .map_err(|e| Error::format(&self.path, format!("cannot write Parquet: {e}")))?;
            self.writer = Some(writer);
            self.schema = Some(schema);
        }
        let schema = self.schema.clone().expect("set with the writer");
        let batch = RecordBatch::try_new(schema, columns.arrays).map_err(|e| {
            Error::format(&self.path, format!("batch does not match the schema: {e}"))
        })?;
        self.content
            .get_or_insert_with(|| ContentHash::new(&batch.schema()))
            .add(&batch)
            .map_err(|e| Error::format(&self.path, e))?;
        let writer = self.writer.as_mut().expect("created above");
        // One row group per batch: rows go to the file as they come, so a
        // long stream (10k CIFAR images) never sits in memory.
        writer
            .write(&batch)
            .and_then(|_| writer.flush())
            .map_err(|e| Error::format(&self.path, format!("cannot write Parquet: {e}")))
    }

    /// Closes the file and renames it into place.
    pub fn finish(mut self) -> Result<()> {
        let mut writer = self.writer.take().ok_or_else(|| {
            Error::format(&self.path, "no rows were written (a table needs a schema)")
        })?;
        writer.append_key_value_metadata(KeyValue::new(
            CONTENT_HASH.to_string(),
            self.content
                .as_ref()
                .map(|c| c.finish(&self.metadata))
                .unwrap_or_default(),
        ));
        writer
            .close()
            .map_err(|e| Error::format(&self.path, format!("cannot finish Parquet: {e}")))?;
        self.file.commit()
    }
}

/// Writes one batch of rows as a whole file.
pub fn write_table(path: &Path, columns: Columns, metadata: Metadata) -> Result<()> {
    let mut w = TableWriter::create(path, metadata)?;
    w.write(columns)?;
    w.finish()
}

/// A Parquet file read into memory, with typed, checked column accessors.
#[derive(Debug)]
pub struct Table {
    pub path: PathBuf,
    pub batch: RecordBatch,
    pub metadata: Metadata,
}

impl Table {
    pub fn read(path: &Path) -> Result<Self> {
        // The parquet crate panics on some damaged footers (a negative
        // column chunk offset); that is a damaged file, not a crash.
        std::panic::catch_unwind(|| Self::read_unguarded(path)).unwrap_or_else(|_| {
            Err(Error::format(
                path,
                "not a readable Parquet file: its metadata is damaged (the Parquet reader failed on it)",
            ))
        })
    }

    fn read_unguarded(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).at(path)?;
        let bad = |e: &dyn std::fmt::Display| {
            Error::format(path, format!("not a readable Parquet file: {e}"))
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
        let mut metadata: Metadata = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .map(|kv| {
                kv.iter()
                    .filter(|kv| kv.key != "ARROW:schema")
                    .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        // Column chunks must lie inside the file: the reader asserts (panics)
        // on a negative offset, and reads garbage past a wrong one.
        let file_len = std::fs::metadata(path).at(path)?.len();
        for rg in builder.metadata().row_groups() {
            for c in rg.columns() {
                let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
                let len = c.compressed_size();
                if start < 0 || len < 0 || (start as u64).saturating_add(len as u64) > file_len {
                    return Err(bad(&format!(
                        "column chunk `{}` at bytes {start}+{len} lies outside the file ({file_len} bytes)",
                        c.column_path()
                    )));
                }
            }
        }
        let schema = builder.schema().clone();
        for (k, v) in schema.metadata() {
            metadata.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let reader = builder.build().map_err(|e| bad(&e))?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| bad(&e))?;
        // Our artifacts (they carry `kind`) must carry the checksum too.
        match metadata.get(CONTENT_HASH) {
            Some(want) => {
                let mut h = ContentHash::new(&schema);
                for b in &batches {
                    h.add(b).map_err(|e| bad(&e))?;
                }
                let found = h.finish(&metadata);
                if &found != want {
                    return Err(Error::format(
                        path,
                        format!("checksum mismatch: the file changed after it was written ({CONTENT_HASH} {want}, contents hash to {found}); rerun the stage that wrote it"),
                    ));
                }
            }
            None if metadata.contains_key("kind") => {
                return Err(Error::format(
                    path,
                    format!("no `{CONTENT_HASH}` metadata: written by an older mat or damaged; rerun the stage that wrote it"),
                ))
            }
            None => {}
        }
        let batch = arrow::compute::concat_batches(&schema, &batches).map_err(|e| bad(&e))?;
        Ok(Self {
            path: path.to_path_buf(),
            batch,
            metadata,
        })
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn column_error(&self, column: &str, expected: String, found: String) -> Error {
        Error::Column {
            path: self.path.clone(),
            column: column.to_string(),
            expected,
            found,
        }
    }

    /// The column `name`, or an error listing the columns the file has.
    pub fn column(&self, name: &str) -> Result<&ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| {
            let have: Vec<_> = self
                .batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            self.column_error(
                name,
                "a column of that name".into(),
                format!("none (the file has: {})", have.join(", ")),
            )
        })
    }

    fn typed<'a, A: Array + 'static>(&'a self, name: &str, want: DataType) -> Result<&'a A> {
        let col = self.column(name)?;
        col.as_any().downcast_ref::<A>().ok_or_else(|| {
            self.column_error(name, format!("{want}"), format!("{}", col.data_type()))
        })
    }

    pub fn u32s(&self, name: &str) -> Result<Vec<u32>> {
        Ok(self
            .typed::<UInt32Array>(name, DataType::UInt32)?
            .values()
            .to_vec())
    }

    pub fn i64s(&self, name: &str) -> Result<Vec<i64>> {
        Ok(self
            .typed::<Int64Array>(name, DataType::Int64)?
            .values()
            .to_vec())
    }

    pub fn f32s(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self
            .typed::<Float32Array>(name, DataType::Float32)?
            .values()
            .to_vec())
    }

    pub fn f64s(&self, name: &str) -> Result<Vec<f64>> {
        Ok(self
            .typed::<Float64Array>(name, DataType::Float64)?
            .values()
            .to_vec())
    }

    pub fn bools(&self, name: &str) -> Result<Vec<bool>> {
        Ok(self
            .typed::<BooleanArray>(name, DataType::Boolean)?
            .iter()
            .map(|b| b.unwrap_or(false))
            .collect())
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .typed::<StringArray>(name, DataType::Utf8)?
            .iter()
            .map(|s| s.unwrap_or_default().to_string())
            .collect())
    }

    /// A `FixedSizeList<Float32>` column of rows of `width` floats, flattened.
    pub fn f32_list(&self, name: &str, width: usize) -> Result<Vec<f32>> {
        let col = self.column(name)?;
        let expected = format!("FixedSizeList<Float32> of length {width}");
        let list = match col.as_any().downcast_ref::<FixedSizeListArray>() {
            Some(l) if l.value_type() == DataType::Float32 => l,
            _ => return Err(self.column_error(name, expected, format!("{}", col.data_type()))),
        };
        if list.value_length() as usize != width {
            return Err(self.column_error(
                name,
                expected,
                format!("FixedSizeList<Float32> of length {}", list.value_length()),
            ));
        }
        let values = list
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("checked");
        let start = list.value_offset_at(0);
        Ok(values.values()[start..start + list.len() * width].to_vec())
    }

    /// The shape recorded for a list column (`[1, 28, 28]`), if any.
    pub fn shape_of(&self, column: &str) -> Option<Vec<usize>> {
        let s = self.metadata.get(&shape_key(column))?;
        s.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|d| d.trim().parse().ok())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Columns {
        Columns::new()
            .u32("index", (0..n as u32).collect())
            .u32("label", (0..n as u32).map(|i| i % 3).collect())
            .f32("l2", (0..n).map(|i| i as f32 * 0.5).collect())
            .bool("success", (0..n).map(|i| i % 2 == 0).collect())
            .f32_list(
                "image",
                (0..n * 4).map(|i| i as f32 / 10.0).collect(),
                &[1, 2, 2],
            )
    }

    fn provenance() -> Metadata {
        [("kind".to_string(), "adv".to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn round_trip_in_two_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut w = TableWriter::create(&path, provenance()).unwrap();
        w.write(sample(3)).unwrap();
        assert!(!path.exists(), "visible only after finish");
        w.write(sample(2)).unwrap();
        w.finish().unwrap();

        let t = Table::read(&path).unwrap();
        assert_eq!(t.num_rows(), 5);
        assert_eq!(t.u32s("index").unwrap(), vec![0, 1, 2, 0, 1]);
        assert_eq!(
            t.bools("success").unwrap(),
            vec![true, false, true, true, false]
        );
        assert_eq!(t.meta("kind").unwrap(), "adv");
        assert_eq!(t.shape_of("image").unwrap(), vec![1, 2, 2]);
        let img = t.f32_list("image", 4).unwrap();
        assert_eq!(img.len(), 20);
        assert_eq!(&img[12..16], &[0.0, 0.1, 0.2, 0.3]);
    }

    #[test]
    fn missing_column_wrong_type_and_wrong_width_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_table(&path, sample(2), provenance()).unwrap();
        let t = Table::read(&path).unwrap();

        let err = t.f32_list("features", 4).unwrap_err().to_string();
        assert!(err.contains("t.parquet: column `features`"), "{err}");
        assert!(
            err.contains("the file has: index, label, l2, success, image"),
            "{err}"
        );

        let err = t.f32_list("image", 784).unwrap_err().to_string();
        assert!(
            err.contains("expected FixedSizeList<Float32> of length 784, found FixedSizeList<Float32> of length 4"),
            "{err}"
        );

        let err = t.f32s("label").unwrap_err().to_string();
        assert!(
            err.contains("column `label`: expected Float32, found UInt32"),
            "{err}"
        );
    }

    /// The checksum is per column over all rows: a file streamed in many
    /// row groups (as `adv.parquet` is) reads back whatever batches the
    /// reader returns, and a table of no rows has one too.
    #[test]
    fn the_checksum_does_not_depend_on_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut w = TableWriter::create(&path, provenance()).unwrap();
        for _ in 0..700 {
            w.write(sample(3)).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(Table::read(&path).unwrap().num_rows(), 2100);
        write_table(&path, sample(0), provenance()).unwrap();
        assert_eq!(Table::read(&path).unwrap().num_rows(), 0);
    }

    #[test]
    fn not_parquet_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"PAR1 but nothing else").unwrap();
        let err = Table::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.parquet: not a readable Parquet file"),
            "{err}"
        );
    }

    #[test]
    fn a_failed_batch_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut w = TableWriter::create(&path, provenance()).unwrap();
        w.write(sample(2)).unwrap();
        // A second batch with a different schema is refused ...
        assert!(w.write(Columns::new().u32("index", vec![1])).is_err());
        drop(w);
        // ... and the abandoned writer leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
