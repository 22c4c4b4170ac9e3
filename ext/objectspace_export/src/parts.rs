//! Parquet files of one hive partition (`<table>/host=<host>/part-NNNNN.parquet`),
//! written with parquet's low-level column writers: rows wait in a buffer of
//! one row group, which is written column by column and dropped, so memory
//! holds one row group whatever the size of the export. A file is written
//! under a `.tmp` name and renamed when closed: a file named `.parquet` is
//! always complete.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, GzipLevel};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;

pub type RowGroup<'a> = SerializedRowGroupWriter<'a, BufWriter<File>>;

/// A table's rows: how they are laid out in Parquet.
pub trait Rows: Sized {
    /// The Parquet message type (see docs/fleet.md's schema tables).
    const SCHEMA: &'static str;
    /// The `rack-objectspace.schema` value in each file's metadata.
    const VERSION: &'static str;
    /// Write `rows` as one row group, one column after another in schema order.
    fn write(rows: &[Self], group: &mut RowGroup<'_>) -> parquet::errors::Result<()>;
}

/// Writer settings shared by every file.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rows per row group: the rows held in memory at once.
    pub row_group: usize,
    /// Rows per file before the next part starts.
    pub file_rows: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            row_group: 128 * 1024,
            file_rows: 8 * 1024 * 1024,
        }
    }
}

/// The files of one partition folder.
pub struct Parts<R: Rows> {
    dir: PathBuf,
    schema: Arc<Type>,
    props: Arc<WriterProperties>,
    limits: Limits,
    buffer: Vec<R>,
    open: Option<(SerializedFileWriter<BufWriter<File>>, PathBuf, PathBuf)>,
    rows_in_file: u64,
    part: usize,
    pub rows: u64,
    pub files: Vec<PathBuf>,
}

fn err(e: impl std::fmt::Display, path: &Path) -> String {
    format!("{}: {e}", path.display())
}

impl<R: Rows> Parts<R> {
    pub fn new(dir: PathBuf, limits: Limits) -> Result<Self, String> {
        std::fs::create_dir_all(&dir).map_err(|e| err(e, &dir))?;
        let schema = Arc::new(parse_message_type(R::SCHEMA).map_err(|e| err(e, &dir))?);
        let props = WriterProperties::builder()
            .set_created_by(format!(
                "rack-objectspace-export {}",
                env!("CARGO_PKG_VERSION")
            ))
            .set_compression(Compression::GZIP(
                GzipLevel::try_new(1).map_err(|e| err(e, &dir))?,
            ))
            .set_dictionary_enabled(true)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "rack-objectspace.schema".to_string(),
                R::VERSION.to_string(),
            )]))
            .build();
        Ok(Parts {
            dir,
            schema,
            props: Arc::new(props),
            limits,
            buffer: Vec::with_capacity(limits.row_group.min(1 << 20)),
            open: None,
            rows_in_file: 0,
            part: 0,
            rows: 0,
            files: Vec::new(),
        })
    }

    pub fn push(&mut self, row: R) -> Result<(), String> {
        self.buffer.push(row);
        if self.buffer.len() >= self.limits.row_group {
            self.flush_group()?;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> Result<(), String> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.open.is_none() {
            let name = format!("part-{:05}.parquet", self.part);
            self.part += 1;
            let path = self.dir.join(&name);
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let file = File::create(&tmp).map_err(|e| err(e, &tmp))?;
            let writer = SerializedFileWriter::new(
                BufWriter::with_capacity(1 << 20, file),
                self.schema.clone(),
                self.props.clone(),
            )
            .map_err(|e| err(e, &tmp))?;
            self.open = Some((writer, tmp, path));
            self.rows_in_file = 0;
        }
        let Some((writer, tmp, _)) = self.open.as_mut() else {
            return Ok(());
        };
        let mut group = writer.next_row_group().map_err(|e| err(e, tmp))?;
        R::write(&self.buffer, &mut group).map_err(|e| err(e, tmp))?;
        group.close().map_err(|e| err(e, tmp))?;
        let n = self.buffer.len() as u64;
        self.rows += n;
        self.rows_in_file += n;
        self.buffer.clear();
        if self.rows_in_file >= self.limits.file_rows {
            self.close_file()?;
        }
        Ok(())
    }

    fn close_file(&mut self) -> Result<(), String> {
        if let Some((writer, tmp, path)) = self.open.take() {
            let out = writer.into_inner().map_err(|e| err(e, &tmp))?;
            out.into_inner()
                .map_err(|e| err(e.error(), &tmp))?
                .sync_all()
                .map_err(|e| err(e, &tmp))?;
            std::fs::rename(&tmp, &path).map_err(|e| err(e, &path))?;
            self.files.push(path);
        }
        Ok(())
    }

    /// Write what is left and close the last file.
    pub fn finish(mut self) -> Result<(u64, Vec<PathBuf>), String> {
        self.flush_group()?;
        self.close_file()?;
        Ok((self.rows, self.files))
    }
}

// Column helpers: each writes the next column of `group`, in schema order.

fn next<'a, 'b>(
    group: &'b mut RowGroup<'a>,
) -> parquet::errors::Result<parquet::file::writer::SerializedColumnWriter<'b>> {
    group.next_column()?.ok_or_else(|| {
        parquet::errors::ParquetError::General("more columns than the schema".into())
    })
}

/// The next column: `values`, none of them null.
fn put<T: DataType>(group: &mut RowGroup<'_>, values: &[T::T]) -> parquet::errors::Result<()> {
    let mut col = next(group)?;
    col.typed::<T>().write_batch(values, None, None)?;
    col.close()
}

/// The next column, nullable: `None` is a null.
fn put_opt<T: DataType>(
    group: &mut RowGroup<'_>,
    values: impl Iterator<Item = Option<T::T>>,
) -> parquet::errors::Result<()> {
    let (mut vals, mut defs) = (Vec::new(), Vec::new());
    for v in values {
        defs.push(i16::from(v.is_some()));
        vals.extend(v);
    }
    let mut col = next(group)?;
    col.typed::<T>().write_batch(&vals, Some(&defs), None)?;
    col.close()
}

pub fn put_i64(
    group: &mut RowGroup<'_>,
    values: impl Iterator<Item = i64>,
) -> parquet::errors::Result<()> {
    put::<Int64Type>(group, &values.collect::<Vec<_>>())
}

pub fn put_opt_i64(
    group: &mut RowGroup<'_>,
    values: impl Iterator<Item = Option<i64>>,
) -> parquet::errors::Result<()> {
    put_opt::<Int64Type>(group, values)
}

pub fn put_i32(
    group: &mut RowGroup<'_>,
    values: impl Iterator<Item = i32>,
) -> parquet::errors::Result<()> {
    put::<Int32Type>(group, &values.collect::<Vec<_>>())
}

pub fn put_opt_i32(
    group: &mut RowGroup<'_>,
    values: impl Iterator<Item = Option<i32>>,
) -> parquet::errors::Result<()> {
    put_opt::<Int32Type>(group, values)
}

pub fn put_str<'r>(
    group: &mut RowGroup<'_>,
    values: impl Iterator<Item = &'r ByteArray>,
) -> parquet::errors::Result<()> {
    put::<ByteArrayType>(group, &values.cloned().collect::<Vec<_>>())
}

pub fn put_opt_str<'r>(
    group: &mut RowGroup<'_>,
    values: impl Iterator<Item = Option<&'r ByteArray>>,
) -> parquet::errors::Result<()> {
    put_opt::<ByteArrayType>(group, values.map(|v| v.cloned()))
}

/// A string for a column (cheap to clone: shared bytes).
pub fn bytes(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}
