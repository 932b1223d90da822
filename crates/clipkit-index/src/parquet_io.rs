//! Minimal Parquet tables (strings, integers, f32 lists) on the `parquet` crate's column
//! API — enough for clip-retrieval's metadata files and label outputs, without pulling in
//! Arrow.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::{Field, ListAccessor};
use parquet::schema::parser::parse_message_type;

use crate::{IndexError, Result};

/// One column of a table to write.
pub enum Column {
    Str(String, Vec<String>),
    I64(String, Vec<i64>),
    F32(String, Vec<f32>),
    /// Fixed-length f32 lists (an embedding per row), flattened.
    F32List(String, usize, Vec<f32>),
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> IndexError {
    IndexError::BadFile {
        path: path.to_owned(),
        problem: format!("parquet: {e}"),
    }
}

pub fn write_table(path: &Path, columns: &[Column]) -> Result<()> {
    let mut schema = String::from("message schema {\n");
    for c in columns {
        match c {
            Column::Str(n, _) => schema += &format!("  REQUIRED BYTE_ARRAY {n} (UTF8);\n"),
            Column::I64(n, _) => schema += &format!("  REQUIRED INT64 {n};\n"),
            Column::F32(n, _) => schema += &format!("  REQUIRED FLOAT {n};\n"),
            Column::F32List(n, _, _) => {
                schema += &format!(
                    "  REQUIRED GROUP {n} (LIST) {{ REPEATED GROUP list {{ REQUIRED FLOAT element; }} }}\n"
                )
            }
        }
    }
    schema += "}";
    let err = |e: parquet::errors::ParquetError| io_error(path, e);
    let schema = Arc::new(parse_message_type(&schema).map_err(err)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let file = File::create(path).map_err(|source| IndexError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(err)?;
    let mut group = writer.next_row_group().map_err(err)?;
    for c in columns {
        let mut col = group
            .next_column()
            .map_err(err)?
            .ok_or_else(|| io_error(path, "schema has fewer columns than data"))?;
        match c {
            Column::Str(_, v) => {
                let values: Vec<ByteArray> =
                    v.iter().map(|s| ByteArray::from(s.as_str())).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, None, None)
                    .map_err(err)?;
            }
            Column::I64(_, v) => {
                col.typed::<Int64Type>()
                    .write_batch(v, None, None)
                    .map_err(err)?;
            }
            Column::F32(_, v) => {
                col.typed::<FloatType>()
                    .write_batch(v, None, None)
                    .map_err(err)?;
            }
            Column::F32List(_, dim, v) => {
                // Every element is defined (level 1); a row's first element starts a new
                // record (repetition 0), the rest continue it (1).
                let def = vec![1i16; v.len()];
                let rep: Vec<i16> = (0..v.len())
                    .map(|i| if i % dim == 0 { 0 } else { 1 })
                    .collect();
                col.typed::<FloatType>()
                    .write_batch(v, Some(&def), Some(&rep))
                    .map_err(err)?;
            }
        }
        col.close().map_err(err)?;
    }
    group.close().map_err(err)?;
    writer.close().map_err(err)?;
    Ok(())
}

/// A column read back: strings, integers or f32 lists, by name.
#[derive(Debug, Default)]
pub struct Table {
    pub rows: usize,
    pub strings: std::collections::HashMap<String, Vec<String>>,
    pub ints: std::collections::HashMap<String, Vec<i64>>,
    pub lists: std::collections::HashMap<String, Vec<Vec<f32>>>,
}

pub fn read_table(path: &Path) -> Result<Table> {
    let err = |e: parquet::errors::ParquetError| io_error(path, e);
    let file = File::open(path).map_err(|source| IndexError::Io {
        path: path.to_owned(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(err)?;
    let mut table = Table::default();
    for row in reader.get_row_iter(None).map_err(err)? {
        let row = row.map_err(err)?;
        table.rows += 1;
        for (name, field) in row.get_column_iter() {
            match field {
                Field::Str(s) => table
                    .strings
                    .entry(name.clone())
                    .or_default()
                    .push(s.clone()),
                Field::Long(v) => table.ints.entry(name.clone()).or_default().push(*v),
                Field::Int(v) => table.ints.entry(name.clone()).or_default().push(*v as i64),
                Field::ListInternal(list) => {
                    let values: Vec<f32> = (0..list.len())
                        .map(|i| {
                            list.get_float(i)
                                .or_else(|_| list.get_double(i).map(|d| d as f32))
                        })
                        .collect::<std::result::Result<_, _>>()
                        .map_err(err)?;
                    table.lists.entry(name.clone()).or_default().push(values);
                }
                _ => {}
            }
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_table(
            &path,
            &[
                Column::Str(
                    "image_path".into(),
                    vec!["a.jpg".into(), "été/b.png".into()],
                ),
                Column::I64("size".into(), vec![10, 20]),
                Column::F32List("embedding".into(), 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ],
        )
        .unwrap();
        let t = read_table(&path).unwrap();
        assert_eq!(t.rows, 2);
        assert_eq!(t.strings["image_path"], vec!["a.jpg", "été/b.png"]);
        assert_eq!(t.ints["size"], vec![10, 20]);
        assert_eq!(
            t.lists["embedding"],
            vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
        );
    }
}
