use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{embed_images, Outcome};
use crate::cli::{EmbedArgs, Format};
use crate::output::{path_str, print_csv, print_json, print_table};
use crate::settings::{expand_images, load_model, warn_truncated};

pub fn run(args: &EmbedArgs) -> Result<Outcome> {
    if args.images.is_empty() && args.texts.is_empty() {
        bail!("nothing to embed: give --image and/or --text");
    }
    if let Some(out) = &args.output {
        output_kind(out)?;
    }
    let images = expand_images(&args.images)?;
    let clip = load_model(&args.model)?;
    let (embedded, failures) = embed_images(&clip, &images);
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    warn_truncated(&clip, texts.iter().copied())?;
    let text_embeddings = clip.embed_texts(&texts)?;

    let value = json!({
        "model": clip.name(),
        "dim": clip.embedding_dim(),
        "images": embedded.iter().map(|(p, e)| json!({"path": path_str(p), "embedding": e})).collect::<Vec<_>>(),
        "texts": texts.iter().zip(&text_embeddings).map(|(t, e)| json!({"text": t, "embedding": e})).collect::<Vec<_>>(),
    });

    if let Some(out) = &args.output {
        let rows: Vec<&Vec<f32>> = embedded
            .iter()
            .map(|(_, e)| e)
            .chain(&text_embeddings)
            .collect();
        write_output(out, &value, &rows, clip.embedding_dim())?;
        eprintln!(
            "wrote {} image and {} text embeddings ({} dims) to {}",
            embedded.len(),
            text_embeddings.len(),
            clip.embedding_dim(),
            out.display()
        );
        return Ok(Outcome::from_failures(failures));
    }

    let items = embedded
        .iter()
        .map(|(p, e)| ("image", path_str(p), e))
        .chain(
            texts
                .iter()
                .zip(&text_embeddings)
                .map(|(t, e)| ("text", t.to_string(), e)),
        );
    match args.print.format {
        Format::Json => print_json(&value)?,
        Format::Csv => {
            let dim = clip.embedding_dim();
            let names: Vec<String> = (0..dim).map(|i| format!("e{i}")).collect();
            let mut header = vec!["kind", "input"];
            header.extend(names.iter().map(String::as_str));
            let rows: Vec<Vec<String>> = items
                .map(|(kind, name, e)| {
                    let mut row = vec![kind.to_string(), name];
                    row.extend(e.iter().map(|v| v.to_string()));
                    row
                })
                .collect();
            print_csv(&header, &rows)?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = items
                .map(|(kind, name, e)| {
                    let head: Vec<String> = e.iter().take(4).map(|v| format!("{v:+.4}")).collect();
                    vec![
                        kind.to_string(),
                        name,
                        e.len().to_string(),
                        format!("[{}, …]", head.join(", ")),
                    ]
                })
                .collect();
            print_table(&["kind", "input", "dim", "embedding"], &rows);
        }
    }
    Ok(Outcome::from_failures(failures))
}

enum OutputKind {
    Npy,
    Json,
}

fn output_kind(path: &Path) -> Result<OutputKind> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(OutputKind::Npy),
        Some("json") => Ok(OutputKind::Json),
        _ => bail!("{}: --output must end in .npy or .json", path.display()),
    }
}

fn write_output(
    path: &Path,
    value: &serde_json::Value,
    rows: &[&Vec<f32>],
    dim: usize,
) -> Result<()> {
    match output_kind(path)? {
        OutputKind::Json => {
            let text = serde_json::to_string(value)?;
            std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
        }
        OutputKind::Npy => {
            let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
            let tensor =
                candle_core::Tensor::from_vec(flat, (rows.len(), dim), &candle_core::Device::Cpu)?;
            tensor
                .write_npy(path)
                .with_context(|| format!("{}: cannot write", path.display()))
        }
    }
}
