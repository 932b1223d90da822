use anyhow::{Context, Result};
use clipkit_core::image::Pixels;
use clipkit_core::scoring;
use clipkit_plot::{probability_chart, Bar, ChartText};

use super::Outcome;
use crate::cli::PlotArgs;
use crate::settings::{load_model, Labels};

pub fn run(args: &PlotArgs) -> Result<Outcome> {
    let labels = Labels::from_args(&args.labels)?;
    let clip = load_model(&args.model)?;
    let label_embeddings = labels.embed(&clip)?;
    let decoded = clip.preprocessor().decode_file(&args.image)?;
    let pixels = clip
        .preprocessor()
        .normalize(&clip.preprocessor().resize_and_crop(&decoded));
    let embedding = clip.embed_pixels(&[pixels])?.remove(0);
    let head = clip.scoring();
    let bars: Vec<Bar> = scoring::classify(&[embedding], &label_embeddings, &head, None)
        .remove(0)
        .into_iter()
        .map(|s| Bar {
            label: labels.labels[s.label].clone(),
            prob: s.probability,
        })
        .collect();
    // Show the picture as the user sees it (with transparency on white), not the model crop.
    let shown = match decoded.pixels {
        Pixels::Rgb(rgb) => rgb,
        Pixels::Rgba(rgba) => clipkit_core::image::pil::composite_on_white(&rgba),
    };
    let title = args
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = ChartText {
        title: &title,
        axis: head.probability_axis(),
    };
    probability_chart(&shown, &bars, text, args.max_bars, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(Outcome::Success)
}
