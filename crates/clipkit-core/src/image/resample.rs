//! PIL's 8-bit resampling (`Image.resize`), reproduced bit for bit.
//!
//! fast_image_resize's convolution uses 16-bit coefficients (the Pillow-SIMD scheme) and
//! lands up to 5 levels away from Pillow on real photos, which breaks the one-level parity
//! with transformers; Pillow itself uses 22-bit fixed-point weights and clamps to 8 bits
//! between its horizontal and vertical pass. This module follows that arithmetic:
//! normalised filter weights per output pixel, rounded to fixed point, horizontal pass
//! first, then vertical.

use super::config::Resample;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    // Keys' cubic with a = -0.5, as PIL's BICUBIC.
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn boxed(x: f64) -> f64 {
    if (-0.5..0.5).contains(&x) {
        1.0
    } else {
        0.0
    }
}

fn hamming(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px * (0.54 + 0.46 * px.cos())
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// `(filter, support)` of a convolution filter.
fn filter(resample: Resample) -> (fn(f64) -> f64, f64) {
    match resample {
        Resample::Box | Resample::Nearest => (boxed, 0.5),
        Resample::Bilinear => (bilinear, 1.0),
        Resample::Hamming => (hamming, 1.0),
        Resample::Bicubic => (bicubic, 2.0),
        Resample::Lanczos => (lanczos, 3.0),
    }
}

/// Fixed-point weights of every output pixel along one axis.
struct Coefficients {
    /// `(first input index, number of taps)` per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output pixel.
    weights: Vec<i32>,
    ksize: usize,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize, resample: Resample) -> Self {
        let (f, base_support) = filter(resample);
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = base_support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's (int) cast truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let taps = xmax.saturating_sub(xmin);
            let mut total = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(taps) {
                *w = f((x as f64 + xmin as f64 - center + 0.5) * ss);
                total += *w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for x in 0..taps {
                let w = if total != 0.0 { k[x] / total } else { k[x] };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                row[x] = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, taps));
        }
        Self {
            bounds,
            weights,
            ksize,
        }
    }
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved 8-bit image with `channels` channels to `out_w × out_h`.
pub fn resize(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
    resample: Resample,
) -> Vec<u8> {
    if (width, height) == (out_w, out_h) {
        return src.to_vec();
    }
    if resample == Resample::Nearest {
        return nearest(src, width, height, channels, out_w, out_h);
    }
    let horizontal = Coefficients::new(width, out_w, resample);
    let vertical = Coefficients::new(height, out_h, resample);
    let (need_h, need_v) = (out_w != width, out_h != height);
    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice
    // what the width does; the order changes the 8-bit intermediate, so we follow it.
    let shrink_h = width as i64 - out_w as i64;
    let shrink_v = height as i64 - out_h as i64;
    if need_h && need_v && shrink_v > 0 && shrink_v > 2 * shrink_h {
        let tmp = vertical_pass(src, width, channels, &vertical);
        horizontal_pass(&tmp, width, out_h, channels, &horizontal)
    } else {
        let tmp = if need_h {
            horizontal_pass(src, width, height, channels, &horizontal)
        } else {
            src.to_vec()
        };
        if need_v {
            vertical_pass(&tmp, out_w, channels, &vertical)
        } else {
            tmp
        }
    }
}

/// Resamples each of `rows` rows of `width` pixels to `k.bounds.len()` pixels.
fn horizontal_pass(
    src: &[u8],
    width: usize,
    rows: usize,
    channels: usize,
    k: &Coefficients,
) -> Vec<u8> {
    let round = 1i32 << (PRECISION_BITS - 1);
    let out_w = k.bounds.len();
    let mut out = vec![0u8; out_w * rows * channels];
    for y in 0..rows {
        let row = &src[y * width * channels..(y + 1) * width * channels];
        let out_row = &mut out[y * out_w * channels..(y + 1) * out_w * channels];
        for (xx, &(xmin, taps)) in k.bounds.iter().enumerate() {
            let weights = &k.weights[xx * k.ksize..][..taps];
            for c in 0..channels {
                let mut acc = round;
                for (t, &w) in weights.iter().enumerate() {
                    acc += i32::from(row[(xmin + t) * channels + c]) * w;
                }
                out_row[xx * channels + c] = clip8(acc);
            }
        }
    }
    out
}

/// Resamples the columns of an image `width` pixels wide to `k.bounds.len()` rows.
fn vertical_pass(src: &[u8], width: usize, channels: usize, k: &Coefficients) -> Vec<u8> {
    let round = 1i32 << (PRECISION_BITS - 1);
    let stride = width * channels;
    let mut out = vec![0u8; k.bounds.len() * stride];
    for (yy, &(ymin, taps)) in k.bounds.iter().enumerate() {
        let weights = &k.weights[yy * k.ksize..][..taps];
        let out_row = &mut out[yy * stride..(yy + 1) * stride];
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc = round;
            for (t, &w) in weights.iter().enumerate() {
                acc += i32::from(src[(ymin + t) * stride + i]) * w;
            }
            *o = clip8(acc);
        }
    }
    out
}

/// PIL's NEAREST resize: the source pixel under each output pixel's centre.
fn nearest(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    let (sx, sy) = (width as f64 / out_w as f64, height as f64 / out_h as f64);
    let mut out = Vec::with_capacity(out_w * out_h * channels);
    for y in 0..out_h {
        let yin = (((y as f64 + 0.5) * sy) as usize).min(height - 1);
        for x in 0..out_w {
            let xin = (((x as f64 + 0.5) * sx) as usize).min(width - 1);
            let at = (yin * width + xin) * channels;
            out.extend_from_slice(&src[at..at + channels]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (inp, out) in [(451, 224), (5, 224), (1201, 60), (300, 32)] {
            let c = Coefficients::new(inp, out, Resample::Bicubic);
            for (xx, &(_, taps)) in c.bounds.iter().enumerate() {
                let sum: i64 = c.weights[xx * c.ksize..][..taps]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= taps as i64,
                    "{inp}->{out} @ {xx}"
                );
            }
        }
    }

    #[test]
    fn flat_images_stay_flat_and_sizes_are_honoured() {
        let src = vec![77u8; 13 * 7 * 3];
        for resample in [
            Resample::Bicubic,
            Resample::Bilinear,
            Resample::Lanczos,
            Resample::Nearest,
        ] {
            let out = resize(&src, 13, 7, 3, 40, 3, resample);
            assert_eq!(out.len(), 40 * 3 * 3);
            assert!(out.iter().all(|&v| v == 77), "{resample:?}");
        }
    }
}
