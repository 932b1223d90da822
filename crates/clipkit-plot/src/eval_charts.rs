//! Charts that explain an evaluation: the confusion matrix as a heat map, accuracy per
//! class, and a gallery of the worst mistakes with their top-3 probabilities.

use std::path::Path;

use image::RgbImage;
use plotters::element::BitMapElement;
use plotters::prelude::*;

use crate::{register_font, PlotError};

fn drawing_error(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |message| PlotError::Drawing {
        path: path.display().to_string(),
        message,
    }
}

fn check_png(path: &Path) -> Result<(), PlotError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("png") => Ok(()),
        _ => Err(PlotError::UnsupportedFormat {
            path: path.display().to_string(),
        }),
    }
}

/// Rows are true classes, columns predictions; each cell is shaded by the share of its
/// row, so small classes read as clearly as large ones.
pub fn confusion_matrix(
    classes: &[String],
    matrix: &[Vec<usize>],
    path: &Path,
) -> Result<(), PlotError> {
    check_png(path)?;
    if classes.is_empty() {
        return Err(PlotError::NoBars);
    }
    register_font();
    let n = classes.len();
    let cell = (700 / n as u32).clamp(4, 60);
    let label_room = 200;
    let size = (
        label_room + cell * n as u32 + 40,
        label_room + cell * n as u32 + 60,
    );
    let err = drawing_error(path);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    root.draw(&Text::new(
        "confusion matrix (rows: true, columns: predicted)",
        (10, 10),
        ("sans-serif", 18),
    ))
    .map_err(|e| err(e.to_string()))?;
    let show_labels = cell >= 12;
    for (i, row) in matrix.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        for (j, &count) in row.iter().enumerate() {
            let share = count as f64 / total;
            let shade = (255.0 * (1.0 - share)) as u8;
            let color = if i == j {
                RGBColor(shade, 255 - (255 - shade) / 3, shade)
            } else {
                RGBColor(255, shade, shade)
            };
            let x = (label_room + j as u32 * cell) as i32;
            let y = (label_room + i as u32 * cell) as i32;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell as i32, y + cell as i32)],
                color.filled(),
            ))
            .map_err(|e| err(e.to_string()))?;
            if cell >= 24 && count > 0 {
                root.draw(&Text::new(
                    count.to_string(),
                    (x + 4, y + cell as i32 / 3),
                    ("sans-serif", 13),
                ))
                .map_err(|e| err(e.to_string()))?;
            }
        }
        if show_labels {
            let y = (label_room + i as u32 * cell + cell / 3) as i32;
            root.draw(&Text::new(
                short(&classes[i], 24),
                (10, y),
                ("sans-serif", 13),
            ))
            .map_err(|e| err(e.to_string()))?;
            let x = (label_room + i as u32 * cell + cell / 3) as i32;
            let style = ("sans-serif", 13)
                .into_font()
                .transform(FontTransform::Rotate270);
            root.draw(&Text::new(
                short(&classes[i], 24),
                (x, label_room as i32 - 8),
                style,
            ))
            .map_err(|e| err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// Accuracy of each class as horizontal bars, worst first (at most `max_classes`).
pub fn per_class_accuracy(
    classes: &[String],
    accuracy: &[Option<f64>],
    max_classes: usize,
    path: &Path,
) -> Result<(), PlotError> {
    check_png(path)?;
    let mut rows: Vec<(String, f32)> = classes
        .iter()
        .zip(accuracy)
        .filter_map(|(c, a)| a.map(|a| (c.clone(), a as f32)))
        .collect();
    if rows.is_empty() {
        return Err(PlotError::NoBars);
    }
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    rows.truncate(max_classes.max(1));
    register_font();
    let n = rows.len();
    let err = drawing_error(path);
    let root = BitMapBackend::new(path, (900, 80 + 26 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("accuracy per class (worst first)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(220)
        .build_cartesian_2d(0f32..1f32, (0..n - 1).into_segmented())
        .map_err(|e| err(e.to_string()))?;
    let names: Vec<String> = rows.iter().map(|r| short(&r.0, 28)).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => names[n - 1 - *i].clone(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (_, acc))| {
            let row = n - 1 - i;
            let mut bar = Rectangle::new(
                [
                    (0f32, SegmentValue::Exact(row)),
                    (*acc, SegmentValue::Exact(row + 1)),
                ],
                RGBColor(66, 133, 244).filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// One wrong prediction: the picture, its true class and the top predictions.
pub struct Mistake {
    pub image: RgbImage,
    pub caption: String,
    pub truth: String,
    pub top: Vec<(String, f32)>,
}

/// A grid of mistakes, each picture with its true class and its top-3 probabilities;
/// `probability` names the function that produced them (`softmax`, `sigmoid`).
pub fn mistakes_gallery(
    mistakes: &[Mistake],
    probability: &str,
    path: &Path,
) -> Result<(), PlotError> {
    check_png(path)?;
    if mistakes.is_empty() {
        return Err(PlotError::NoBars);
    }
    register_font();
    let (cols, tile_w, tile_h, thumb) = (4u32, 300u32, 300u32, 180u32);
    let rows = (mistakes.len() as u32).div_ceil(cols);
    let err = drawing_error(path);
    let root = BitMapBackend::new(path, (cols * tile_w, rows * tile_h + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    root.draw(&Text::new(
        format!("worst mistakes (most confident wrong predictions; {probability} probabilities)"),
        (10, 10),
        ("sans-serif", 18),
    ))
    .map_err(|e| err(e.to_string()))?;
    for (i, m) in mistakes.iter().enumerate() {
        let (x0, y0) = ((i as u32 % cols) * tile_w, 40 + (i as u32 / cols) * tile_h);
        let scale = f64::from(thumb) / f64::from(m.image.width().max(m.image.height()).max(1));
        let (w, h) = (
            ((f64::from(m.image.width()) * scale) as u32).max(1),
            ((f64::from(m.image.height()) * scale) as u32).max(1),
        );
        let small = image::imageops::resize(&m.image, w, h, image::imageops::FilterType::Triangle);
        if let Some(bitmap) = BitMapElement::with_owned_buffer(
            ((x0 + (tile_w - w) / 2) as i32, y0 as i32),
            (w, h),
            small.into_raw(),
        ) {
            root.draw(&bitmap).map_err(|e| err(e.to_string()))?;
        }
        let mut y = (y0 + thumb + 6) as i32;
        let x = (x0 + 10) as i32;
        let lines = std::iter::once((
            format!("{} — true: {}", short(&m.caption, 18), short(&m.truth, 16)),
            BLACK,
        ))
        .chain(m.top.iter().take(3).map(|(label, p)| {
            let color = if *label == m.truth {
                RGBColor(0, 130, 0)
            } else {
                RGBColor(200, 0, 0)
            };
            (format!("{:5.1}%  {}", p * 100.0, short(label, 26)), color)
        }));
        for (text, color) in lines {
            root.draw(&Text::new(
                text,
                (x, y),
                ("sans-serif", 14).into_font().color(&color),
            ))
            .map_err(|e| err(e.to_string()))?;
            y += 20;
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let classes: Vec<String> = ["cat", "dog", "camera man"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 6]];
        let p = dir.path().join("confusion.png");
        confusion_matrix(&classes, &m, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // The diagonal cell of the perfect class is saturated green.
        let cell = (700 / 3u32).clamp(4, 60);
        let c = img
            .get_pixel(200 + 2 * cell + cell / 2, 200 + 2 * cell + cell - 3)
            .0;
        assert_eq!(c, [0, 170, 0]);
        per_class_accuracy(
            &classes,
            &[Some(0.8), Some(0.5), None],
            10,
            &dir.path().join("acc.png"),
        )
        .unwrap();
        let mistakes = vec![Mistake {
            image: RgbImage::from_pixel(40, 20, image::Rgb([200, 10, 10])),
            caption: "x.png".into(),
            truth: "cat".into(),
            top: vec![
                ("dog".into(), 0.7),
                ("cat".into(), 0.2),
                ("camera man".into(), 0.1),
            ],
        }];
        mistakes_gallery(&mistakes, "softmax", &dir.path().join("mistakes.png")).unwrap();
        assert!(
            per_class_accuracy(&classes, &[None, None, None], 10, &dir.path().join("e.png"))
                .is_err()
        );
        assert!(confusion_matrix(&classes, &m, &dir.path().join("c.svg")).is_err());
    }
}
