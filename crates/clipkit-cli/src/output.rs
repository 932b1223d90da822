//! Printing results as aligned tables, JSON or CSV.

use std::io::Write;
use std::path::Path;

/// Columns padded to their widest cell; numbers should be pre-formatted.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}

pub fn print_csv(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    w.write_record(header)?;
    for row in rows {
        w.write_record(row)?;
    }
    w.flush()?;
    Ok(())
}

pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// How a path is shown to people and written to JSON/CSV (lossy for non-UTF-8 names).
pub fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Reports a per-input failure (the error names the file) without stopping the batch.
pub fn report_failure(error: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {error}{}", hint(error));
}

/// What to add to an image error that the command line can fix: the library says an image is
/// over the pixel limit, but only the command line knows the flag that raises it.
pub fn hint(error: &(dyn std::error::Error + 'static)) -> &'static str {
    if over_pixel_limit(error) {
        "; raise the limit with --max-pixels"
    } else {
        ""
    }
}

/// Whether `error`, or anything in its chain of sources, is an image over the pixel limit.
fn over_pixel_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    use clipkit_core::image::{ImageError, ImageProblem};
    use clipkit_core::ClipError;
    std::iter::successors(Some(error), |e| e.source()).any(|e| {
        let problem = if let Some(e) = e.downcast_ref::<ClipError>() {
            e.image_problem()
        } else if let Some(e) = e.downcast_ref::<ImageError>() {
            e.problem()
        } else {
            e.downcast_ref::<ImageProblem>()
        };
        matches!(problem, Some(ImageProblem::TooManyPixels { .. }))
    })
}
