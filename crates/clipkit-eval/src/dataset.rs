//! Labelled image sets: an ImageFolder (`class_name/*.jpg`), or a CSV / JSONL list of
//! `(path, label)` with paths relative to the list's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clipkit_core::image::files::find_images;

use crate::{EvalError, Result};

#[derive(Debug, Clone)]
pub struct Dataset {
    /// What the user pointed at (folder or list file).
    pub source: PathBuf,
    /// Class names in class-index order.
    pub classes: Vec<String>,
    /// Image path and class index, in a stable order.
    pub items: Vec<(PathBuf, usize)>,
}

impl Dataset {
    /// Opens a folder as an ImageFolder, or a `.csv` / `.jsonl` file as a list.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Self::image_folder(path);
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Self::csv(path),
            Some("jsonl") | Some("json") => Self::jsonl(path),
            _ if !path.exists() => Err(EvalError::dataset(path, "no such file or directory")),
            _ => Err(EvalError::dataset(
                path,
                "expected an ImageFolder directory, a .csv or a .jsonl file",
            )),
        }
    }

    /// Classes are the sub-folders in sorted order (torchvision's ImageFolder order); images
    /// are searched recursively inside each and sorted.
    pub fn image_folder(root: &Path) -> Result<Self> {
        let mut class_dirs: Vec<PathBuf> =
            read_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
        class_dirs.sort();
        if class_dirs.is_empty() {
            return Err(EvalError::dataset(
                root,
                "no class folders (expected class_name/*.jpg)",
            ));
        }
        let mut classes = Vec::new();
        let mut items = Vec::new();
        for dir in class_dirs {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let images = find_images(&dir).map_err(|source| EvalError::Io {
                path: dir.clone(),
                source,
            })?;
            let index = classes.len();
            classes.push(name);
            items.extend(images.into_iter().map(|p| (p, index)));
        }
        if items.is_empty() {
            return Err(EvalError::dataset(
                root,
                "the class folders contain no images",
            ));
        }
        Ok(Self {
            source: root.to_path_buf(),
            classes,
            items,
        })
    }

    /// `path,label` rows (a header row naming those columns is required).
    pub fn csv(path: &Path) -> Result<Self> {
        let mut reader = csv::Reader::from_path(path)
            .map_err(|e| EvalError::dataset(path, format!("cannot read CSV: {e}")))?;
        let headers = reader
            .headers()
            .map_err(|e| EvalError::dataset(path, format!("cannot read CSV header: {e}")))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| {
                    EvalError::dataset(path, format!("CSV header has no `{name}` column"))
                })
        };
        let (pi, li) = (column("path")?, column("label")?);
        let mut rows = Vec::new();
        for (n, record) in reader.records().enumerate() {
            let record =
                record.map_err(|e| EvalError::dataset(path, format!("row {}: {e}", n + 2)))?;
            let field = |i: usize| record.get(i).unwrap_or("").trim().to_string();
            rows.push((field(pi), field(li)));
        }
        Self::from_rows(path, rows)
    }

    /// One JSON object per line with `path` and `label` strings.
    pub fn jsonl(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut rows = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| EvalError::dataset(path, format!("line {}: {e}", n + 1)))?;
            let get = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .map(String::from)
                    .ok_or_else(|| {
                        EvalError::dataset(path, format!("line {}: no string `{k}`", n + 1))
                    })
            };
            rows.push((get("path")?, get("label")?));
        }
        Self::from_rows(path, rows)
    }

    /// Classes of a list are its distinct labels, sorted.
    fn from_rows(list: &Path, rows: Vec<(String, String)>) -> Result<Self> {
        if rows.is_empty() {
            return Err(EvalError::dataset(list, "the list has no rows"));
        }
        let base = list.parent().unwrap_or(Path::new("."));
        let mut index = BTreeMap::new();
        for (_, label) in &rows {
            if label.is_empty() {
                return Err(EvalError::dataset(list, "a row has an empty label"));
            }
            index.entry(label.clone()).or_insert(0usize);
        }
        for (i, v) in index.values_mut().enumerate() {
            *v = i;
        }
        let classes = index.keys().cloned().collect();
        let items = rows
            .into_iter()
            .map(|(p, label)| (base.join(p), index[&label]))
            .collect();
        Ok(Self {
            source: list.to_path_buf(),
            classes,
            items,
        })
    }

    /// Replaces the class names (e.g. folder ids → readable names), one per line, in
    /// class-index order.
    pub fn rename_classes(&mut self, file: &Path) -> Result<()> {
        let text = std::fs::read_to_string(file).map_err(|source| EvalError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.len() != self.classes.len() {
            return Err(EvalError::dataset(
                file,
                format!(
                    "has {} class names, the dataset has {} classes",
                    names.len(),
                    self.classes.len()
                ),
            ));
        }
        self.classes = names;
        Ok(())
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    entries
        .map(|e| {
            e.map(|e| e.path()).map_err(|source| EvalError::Io {
                path: dir.to_path_buf(),
                source,
            })
        })
        .collect()
}
