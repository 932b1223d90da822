//! Charts for clipkit: the classic CLIP demo figure, the image on the left and a horizontal
//! bar chart of label probabilities on the right, as PNG or SVG.
//!
//! Text is drawn with an embedded DejaVu Sans, so the output looks the same on a machine
//! without fonts (CI, containers).

pub mod eval_charts;

use std::path::Path;
use std::sync::Once;

use image::RgbImage;
use plotters::coord::Shift;
use plotters::element::BitMapElement;
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 480;
const IMAGE_PANEL: u32 = 480;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: unsupported chart format (use .png or .svg)")]
    UnsupportedFormat { path: String },
    #[error("nothing to plot: no labels")]
    NoBars,
    #[error("{path}: cannot draw the chart: {message}")]
    Drawing { path: String, message: String },
}

/// One bar: a label and its probability in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub prob: f32,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; it parses, or this crate would not have passed its tests.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// What the chart shows besides the bars: its title and what its probability axis says
/// (which function produced the probabilities, e.g. "probability (sigmoid, each label on its
/// own)").
#[derive(Debug, Clone, Copy)]
pub struct ChartText<'a> {
    pub title: &'a str,
    pub axis: &'a str,
}

/// Draws `image` beside the bars (highest probability on top, at most `max_bars`) into
/// `path`; the extension picks PNG or SVG.
pub fn probability_chart(
    image: &RgbImage,
    bars: &[Bar],
    text: ChartText,
    max_bars: usize,
    path: &Path,
) -> Result<(), PlotError> {
    if bars.is_empty() {
        return Err(PlotError::NoBars);
    }
    register_font();
    let mut bars = bars.to_vec();
    bars.sort_by(|a, b| b.prob.total_cmp(&a.prob));
    bars.truncate(max_bars.max(1));
    let shown = path.display().to_string();
    let err = |e: String| PlotError::Drawing {
        path: shown.clone(),
        message: e,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => {
            let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
            draw(&root, image, &bars, text).map_err(err)?;
            root.present().map_err(|e| err(e.to_string()))
        }
        Some("svg") => {
            {
                let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
                draw(&root, image, &bars, text).map_err(err)?;
                root.present().map_err(|e| err(e.to_string()))?;
            }
            // plotters writes `data:png`; browsers need the full MIME type to show the image.
            let svg = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            std::fs::write(
                path,
                svg.replace("\"data:png;base64,", "\"data:image/png;base64,"),
            )
            .map_err(|e| err(e.to_string()))
        }
        _ => Err(PlotError::UnsupportedFormat { path: shown }),
    }
}

/// The same chart as [`probability_chart`], as PNG bytes in memory (for servers, which have
/// no file to write to).
pub fn probability_chart_png(
    image: &RgbImage,
    bars: &[Bar],
    text: ChartText,
    max_bars: usize,
) -> Result<Vec<u8>, PlotError> {
    if bars.is_empty() {
        return Err(PlotError::NoBars);
    }
    register_font();
    let mut bars = bars.to_vec();
    bars.sort_by(|a, b| b.prob.total_cmp(&a.prob));
    bars.truncate(max_bars.max(1));
    let err = |message: String| PlotError::Drawing {
        path: "<memory>".into(),
        message,
    };
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, image, &bars, text).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    let canvas = RgbImage::from_raw(WIDTH, HEIGHT, rgb).expect("buffer has WIDTH×HEIGHT×3 bytes");
    let mut png = Vec::new();
    canvas
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))?;
    Ok(png)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    image: &RgbImage,
    bars: &[Bar],
    text: ChartText,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (left, right) = root.split_horizontally(IMAGE_PANEL);

    // The image, fitted into the left panel with its aspect ratio kept.
    let margin = 20;
    let room = IMAGE_PANEL - 2 * margin;
    let scale = f64::from(room) / f64::from(image.width().max(image.height()));
    let (w, h) = (
        ((f64::from(image.width()) * scale).round() as u32).max(1),
        ((f64::from(image.height()) * scale).round() as u32).max(1),
    );
    let thumb = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
    let x = (IMAGE_PANEL - w) / 2;
    let y = (HEIGHT - h) / 2;
    if let Some(bitmap) =
        BitMapElement::with_owned_buffer((x as i32, y as i32), (w, h), thumb.into_raw())
    {
        left.draw(&bitmap).map_err(e)?;
    }

    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let n = bars.len();
    let mut chart = ChartBuilder::on(&right)
        .caption(text.title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(label_area_width(&labels))
        .build_cartesian_2d(0f32..1f32, (0..n - 1).into_segmented())
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_desc(text.axis)
        .x_labels(6)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - *i].clone(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;
    let color = RGBColor(66, 133, 244);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let row = n - 1 - i;
            let mut bar = Rectangle::new(
                [
                    (0f32, SegmentValue::Exact(row)),
                    (b.prob.clamp(0.0, 1.0), SegmentValue::Exact(row + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(6, 6, 0, 0);
            bar
        }))
        .map_err(e)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let row = n - 1 - i;
            Text::new(
                format!("{:.1}%", b.prob * 100.0),
                (
                    (b.prob.clamp(0.0, 1.0) + 0.01).min(0.88),
                    SegmentValue::CenterOf(row),
                ),
                ("sans-serif", 15).into_font(),
            )
        }))
        .map_err(e)?;
    Ok(())
}

fn label_area_width(labels: &[String]) -> u32 {
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
    (longest as u32 * 9 + 20).clamp(60, 320)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(title: &str) -> ChartText<'_> {
        ChartText {
            title,
            axis: "probability (sigmoid, each label on its own)",
        }
    }

    fn bars() -> Vec<Bar> {
        vec![
            Bar {
                label: "a photo of a cat".into(),
                prob: 0.9,
            },
            Bar {
                label: "a photo of a dog".into(),
                prob: 0.1,
            },
        ]
    }

    #[test]
    fn png_has_the_image_on_the_left_and_bars_on_the_right() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let red = RgbImage::from_pixel(64, 32, image::Rgb([255, 0, 0]));
        probability_chart(&red, &bars(), text("chelsea.png"), 10, &path).unwrap();
        let out = image::open(&path).unwrap().to_rgb8();
        assert_eq!(out.dimensions(), (WIDTH, HEIGHT));
        // The centre of the image panel shows the (red) picture.
        assert_eq!(out.get_pixel(IMAGE_PANEL / 2, HEIGHT / 2).0, [255, 0, 0]);
        // The right half has bar-coloured pixels, the left half none.
        let blue = |x0: u32, x1: u32| {
            (x0..x1)
                .flat_map(|x| (0..HEIGHT).map(move |y| (x, y)))
                .filter(|&(x, y)| out.get_pixel(x, y).0 == [66, 133, 244])
                .count()
        };
        assert!(blue(IMAGE_PANEL, WIDTH) > 1000);
        assert_eq!(blue(0, IMAGE_PANEL), 0);
    }

    #[test]
    fn svg_embeds_the_image_and_names_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        let img = RgbImage::from_pixel(10, 10, image::Rgb([0, 255, 0]));
        probability_chart(&img, &bars(), text("t"), 10, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<image") && svg.contains("data:image/png;base64,"));
        assert!(svg.contains("a photo of a cat"));
        assert!(svg.contains("90.0%"));
        // The axis says which function produced the probabilities.
        assert!(svg.contains("sigmoid, each label on its own"), "{svg}");
    }

    #[test]
    fn bad_requests_are_errors() {
        let img = RgbImage::new(4, 4);
        let dir = tempfile::tempdir().unwrap();
        let err =
            probability_chart(&img, &bars(), text("t"), 5, &dir.path().join("x.gif")).unwrap_err();
        assert!(err.to_string().contains("x.gif"));
        assert!(matches!(
            probability_chart(&img, &[], text("t"), 5, &dir.path().join("x.png")),
            Err(PlotError::NoBars)
        ));
    }

    #[test]
    fn png_in_memory_is_a_png_of_the_chart_size() {
        let image = RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10]));
        let png = probability_chart_png(&image, &bars(), text("title"), 10).unwrap();
        let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (WIDTH, HEIGHT));
        assert!(matches!(
            probability_chart_png(&image, &[], text("t"), 10),
            Err(PlotError::NoBars)
        ));
    }
}
