//! PIL's 8-bit resampling (`Image.resize`), reproduced bit for bit.
//!
//! fast_image_resize's convolution uses 16-bit coefficients (the Pillow-SIMD scheme) and
//! lands up to 5 levels away from Pillow on real photos, which breaks the one-level parity
//! with transformers; Pillow itself uses 22-bit fixed-point weights and clamps to 8 bits
//! between its horizontal and vertical pass. This module follows that arithmetic:
//! normalised filter weights per output pixel, rounded to fixed point, one pass per axis whose
//! size changes, clamped to 8 bits in between.
//!
//! The order of the passes is Pillow's too, since it changes that 8-bit intermediate: the
//! horizontal pass runs first, except when both axes change and the height shrinks by more
//! than twice as many pixels as the width does (`height - out_h > 2 * (width - out_w)`),
//! where the vertical pass runs first ([`resize_window`]). An axis that keeps its size has no
//! pass; `Nearest` and an unchanged size are plain pixel copies.

use crate::config::Resample;

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

/// A window of the resized image, in output pixels: what survives the centre crop. Output
/// pixels depend only on their own weights, so computing just these gives the same bytes as
/// resizing everything and cropping, for a fraction of the work on wide or tall photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
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
    let all = Window {
        x: 0,
        y: 0,
        width: out_w,
        height: out_h,
    };
    resize_window(src, width, height, channels, out_w, out_h, resample, all)
}

/// [`resize`], keeping only `window` of the output (which must lie inside it).
#[allow(clippy::too_many_arguments)]
pub fn resize_window(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
    resample: Resample,
    window: Window,
) -> Vec<u8> {
    assert!(window.x + window.width <= out_w && window.y + window.height <= out_h);
    assert_eq!(src.len(), width * height * channels);
    if (width, height) == (out_w, out_h) {
        return crop(src, width, channels, window);
    }
    if resample == Resample::Nearest {
        let full = nearest(src, width, height, channels, out_w, out_h);
        return crop(&full, out_w, channels, window);
    }
    let cols = Coefficients::new(width, out_w, resample).window(window.x, window.width);
    let rows = Coefficients::new(height, out_h, resample).window(window.y, window.height);
    let (need_h, need_v) = (out_w != width, out_h != height);
    let image = Plane {
        data: src,
        width,
        height,
        channels,
    };
    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice
    // what the width does; the order changes the 8-bit intermediate, so we follow it.
    let shrink_h = width as i64 - out_w as i64;
    let shrink_v = height as i64 - out_h as i64;
    if need_h && need_v && shrink_v > 0 && shrink_v > 2 * shrink_h {
        // Only the input columns the horizontal taps of the window read.
        let (x0, x1) = cols.span();
        let tmp = vertical_pass(&image, x0, x1, &rows);
        let tmp = Plane {
            data: &tmp,
            width: x1 - x0,
            height: window.height,
            channels,
        };
        horizontal_pass(&tmp, &cols.shifted(x0))
    } else {
        let (y0, y1) = if need_v {
            rows.span()
        } else {
            (window.y, window.y + window.height)
        };
        let tmp = if need_h {
            let band = image.rows(y0, y1);
            horizontal_pass(&band, &cols)
        } else {
            crop(
                &src[y0 * width * channels..y1 * width * channels],
                width,
                channels,
                Window {
                    x: window.x,
                    y: 0,
                    width: window.width,
                    height: y1 - y0,
                },
            )
        };
        if need_v {
            let tmp = Plane {
                data: &tmp,
                width: window.width,
                height: y1 - y0,
                channels,
            };
            vertical_pass(&tmp, 0, window.width, &rows.shifted(y0))
        } else {
            tmp
        }
    }
}

fn crop(src: &[u8], width: usize, channels: usize, w: Window) -> Vec<u8> {
    let mut out = Vec::with_capacity(w.width * w.height * channels);
    for y in w.y..w.y + w.height {
        let row = &src[(y * width + w.x) * channels..][..w.width * channels];
        out.extend_from_slice(row);
    }
    out
}

/// A borrowed interleaved 8-bit image.
struct Plane<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    channels: usize,
}

impl<'a> Plane<'a> {
    fn rows(&self, y0: usize, y1: usize) -> Plane<'a> {
        let stride = self.width * self.channels;
        Plane {
            data: &self.data[y0 * stride..y1 * stride],
            width: self.width,
            height: y1 - y0,
            channels: self.channels,
        }
    }
}

impl Coefficients {
    /// The weights of output pixels `first..first + count` only.
    fn window(self, first: usize, count: usize) -> Self {
        Self {
            bounds: self.bounds[first..first + count].to_vec(),
            weights: self.weights[first * self.ksize..(first + count) * self.ksize].to_vec(),
            ksize: self.ksize,
        }
    }

    /// The input range all taps read.
    fn span(&self) -> (usize, usize) {
        let lo = self.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let hi = self.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        (lo, hi.max(lo))
    }

    /// The same weights with input indices relative to `origin`.
    fn shifted(&self, origin: usize) -> Self {
        Self {
            bounds: self.bounds.iter().map(|&(s, n)| (s - origin, n)).collect(),
            weights: self.weights.clone(),
            ksize: self.ksize,
        }
    }
}

/// Defines `fn name(..)` that runs its body compiled for the widest vector unit this CPU has,
/// so the plain loops in it become AVX-512 or AVX2 code. The arithmetic is integer, so every
/// copy gives the same bytes.
macro_rules! multiversion {
    (fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
                unsafe fn avx512($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    generic($($arg),*)
                }
                if clipkit_kernels::has_avx512() {
                    // SAFETY: the CPU has these features (checked at run time).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

/// Lanes per group in the horizontal kernel: 16 bytes of interleaved pixels at a time.
const LANES: usize = 16;

/// Horizontal weights laid out for the kernel: per output pixel, groups of `16 / channels`
/// taps with each weight repeated once per channel, zero-padded to 16 lanes.
struct LaneWeights {
    groups: Vec<usize>,
    offsets: Vec<usize>,
    lanes: Vec<i32>,
}

impl LaneWeights {
    fn new(k: &Coefficients, channels: usize) -> Self {
        let per_group = LANES / channels;
        let mut groups = Vec::with_capacity(k.bounds.len());
        let mut offsets = Vec::with_capacity(k.bounds.len());
        let mut lanes = Vec::new();
        for (xx, &(_, taps)) in k.bounds.iter().enumerate() {
            let weights = &k.weights[xx * k.ksize..][..taps];
            offsets.push(lanes.len());
            groups.push(taps.div_ceil(per_group));
            for group in weights.chunks(per_group) {
                let mut lane = [0i32; LANES];
                for (t, &w) in group.iter().enumerate() {
                    lane[t * channels..(t + 1) * channels].fill(w);
                }
                lanes.extend_from_slice(&lane);
            }
        }
        Self {
            groups,
            offsets,
            lanes,
        }
    }
}

/// Resamples every row of `src` to `k.bounds.len()` pixels.
fn horizontal_pass(src: &Plane, k: &Coefficients) -> Vec<u8> {
    let lw = LaneWeights::new(k, src.channels);
    let mut out = vec![0u8; k.bounds.len() * src.height * src.channels];
    #[cfg(target_arch = "x86_64")]
    if clipkit_kernels::has_avx512() {
        // SAFETY: the CPU has AVX-512 F/BW/VL (checked at run time).
        unsafe {
            match src.channels {
                1 => horizontal_rows_avx512::<1>(src, k, &lw, &mut out),
                3 => horizontal_rows_avx512::<3>(src, k, &lw, &mut out),
                4 => horizontal_rows_avx512::<4>(src, k, &lw, &mut out),
                n => unreachable!("{n} channels"),
            }
        }
        return out;
    }
    match src.channels {
        1 => horizontal_rows_1(src, k, &lw, &mut out),
        3 => horizontal_rows_3(src, k, &lw, &mut out),
        4 => horizontal_rows_4(src, k, &lw, &mut out),
        n => unreachable!("{n} channels"),
    }
    out
}

// The channel count is a constant in each copy, so the per-pixel fold of lanes into
// channels compiles to fixed shuffles instead of a division per lane.
multiversion! {
fn horizontal_rows_1(src: &Plane, k: &Coefficients, lw: &LaneWeights, out: &mut [u8]) {
    horizontal_rows::<1>(src, k, lw, out)
}
}
multiversion! {
fn horizontal_rows_3(src: &Plane, k: &Coefficients, lw: &LaneWeights, out: &mut [u8]) {
    horizontal_rows::<3>(src, k, lw, out)
}
}
multiversion! {
fn horizontal_rows_4(src: &Plane, k: &Coefficients, lw: &LaneWeights, out: &mut [u8]) {
    horizontal_rows::<4>(src, k, lw, out)
}
}

/// The horizontal pass written out in AVX-512: per output pixel, 16 input bytes widened to
/// 16 i32 lanes and multiplied by the lane weights per group of taps, then the lanes folded
/// into channels with lane shifts. (The compiler's own vectorisation of [`horizontal_rows`]
/// reached a third of this.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn horizontal_rows_avx512<const CH: usize>(
    src: &Plane,
    k: &Coefficients,
    lw: &LaneWeights,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    let step = (LANES / CH) * CH;
    let stride = src.width * CH;
    let out_stride = k.bounds.len() * CH;
    let round = _mm512_set1_epi32(1 << (PRECISION_BITS - 1));
    let zero = _mm512_setzero_si512();
    let (lo, hi) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
    let data = src.data;
    assert!(out.len() >= src.height * out_stride);
    for y in 0..src.height {
        let row_start = y * stride;
        for (xx, &(xmin, _)) in k.bounds.iter().enumerate() {
            let groups = lw.groups[xx];
            let weights = &lw.lanes[lw.offsets[xx]..][..groups * LANES];
            let mut acc = _mm512_setzero_si512();
            for g in 0..groups {
                let at = row_start + xmin * CH + g * step;
                // SAFETY: reads stay inside `data` (masked where the buffer ends: masked-off
                // bytes are not touched); `weights` holds 16 lanes per group.
                let px = if at + LANES <= data.len() {
                    _mm_loadu_si128(data.as_ptr().add(at).cast())
                } else {
                    let avail = data.len().saturating_sub(at).min(LANES);
                    let mask = ((1u32 << avail) - 1) as __mmask16;
                    _mm_maskz_loadu_epi8(mask, data.as_ptr().add(at.min(data.len())).cast())
                };
                let w = _mm512_loadu_si512(weights.as_ptr().add(g * LANES).cast());
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(px), w));
            }
            // Fold lane i + n·CH into lane i.
            let sum = match CH {
                1 => {
                    let t = _mm512_add_epi32(acc, _mm512_alignr_epi32::<8>(zero, acc));
                    let t = _mm512_add_epi32(t, _mm512_alignr_epi32::<4>(zero, t));
                    let t = _mm512_add_epi32(t, _mm512_alignr_epi32::<2>(zero, t));
                    _mm512_add_epi32(t, _mm512_alignr_epi32::<1>(zero, t))
                }
                3 => {
                    let t = _mm512_add_epi32(acc, _mm512_alignr_epi32::<6>(zero, acc));
                    let t = _mm512_add_epi32(t, _mm512_alignr_epi32::<3>(zero, t));
                    _mm512_add_epi32(t, _mm512_alignr_epi32::<12>(zero, acc))
                }
                4 => {
                    let t = _mm512_add_epi32(acc, _mm512_alignr_epi32::<8>(zero, acc));
                    _mm512_add_epi32(t, _mm512_alignr_epi32::<4>(zero, t))
                }
                _ => unreachable!(),
            };
            let v = _mm512_srai_epi32::<{ PRECISION_BITS }>(_mm512_add_epi32(sum, round));
            let v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
            // Through a local, not a masked store: `_mm_mask_storeu_epi8` here wrote past the
            // end of `out` in release builds when CH = 1 (a constant one-byte mask; rustc
            // 1.95). The canary test below holds this.
            let mut bytes = [0u8; 16];
            _mm_storeu_si128(bytes.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(v));
            let at = y * out_stride + xx * CH;
            out[at..at + CH].copy_from_slice(&bytes[..CH]);
        }
    }
}

#[inline(always)]
fn horizontal_rows<const CH: usize>(
    src: &Plane,
    k: &Coefficients,
    lw: &LaneWeights,
    out: &mut [u8],
) {
    let ch = CH;
    let step = (LANES / ch) * ch;
    let round = 1i32 << (PRECISION_BITS - 1);
    let stride = src.width * ch;
    let out_stride = k.bounds.len() * ch;
    for y in 0..src.height {
        let row_start = y * stride;
        let out_row = &mut out[y * out_stride..(y + 1) * out_stride];
        for (xx, &(xmin, _)) in k.bounds.iter().enumerate() {
            let mut acc = [0i32; LANES];
            let weights = &lw.lanes[lw.offsets[xx]..][..lw.groups[xx] * LANES];
            for (g, w) in weights.chunks_exact(LANES).enumerate() {
                let at = row_start + xmin * ch + g * step;
                let px = sixteen(src.data, at);
                for l in 0..LANES {
                    acc[l] += i32::from(px[l]) * w[l];
                }
            }
            let mut sums = [round; 4];
            for (l, a) in acc.iter().enumerate().take(step) {
                sums[l % ch] += a;
            }
            for c in 0..ch {
                out_row[xx * ch + c] = clip8(sums[c]);
            }
        }
    }
}

/// 16 bytes from `at`, zero-filled past the end of the buffer (their weights are zero).
#[inline(always)]
fn sixteen(data: &[u8], at: usize) -> [u8; LANES] {
    match data.get(at..at + LANES) {
        Some(s) => s.try_into().expect("16 bytes"),
        None => {
            let mut px = [0u8; LANES];
            let tail = &data[at.min(data.len())..];
            px[..tail.len().min(LANES)].copy_from_slice(&tail[..tail.len().min(LANES)]);
            px
        }
    }
}

/// Resamples columns `x0..x1` of `src` to `k.bounds.len()` rows.
fn vertical_pass(src: &Plane, x0: usize, x1: usize, k: &Coefficients) -> Vec<u8> {
    let ch = src.channels;
    let (lo, hi) = (x0 * ch, x1 * ch);
    let mut out = vec![0u8; k.bounds.len() * (hi - lo)];
    vertical_rows(src, lo, hi, k, &mut out);
    out
}

multiversion! {
fn vertical_rows(src: &Plane, lo: usize, hi: usize, k: &Coefficients, out: &mut [u8]) {
    let stride = src.width * src.channels;
    let round = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; hi - lo];
    for (yy, &(ymin, taps)) in k.bounds.iter().enumerate() {
        acc.fill(round);
        for (t, &w) in k.weights[yy * k.ksize..][..taps].iter().enumerate() {
            let row = &src.data[(ymin + t) * stride..][lo..hi];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        let out_row = &mut out[yy * (hi - lo)..(yy + 1) * (hi - lo)];
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}
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

    /// The straightforward scalar form of Pillow's two passes, to hold the fast one to.
    fn reference(
        src: &[u8],
        (width, height, channels): (usize, usize, usize),
        (out_w, out_h): (usize, usize),
        resample: Resample,
    ) -> Vec<u8> {
        let round = 1i32 << (PRECISION_BITS - 1);
        let h = Coefficients::new(width, out_w, resample);
        let v = Coefficients::new(height, out_h, resample);
        let horizontal = |src: &[u8], rows: usize| {
            let mut out = vec![0u8; out_w * rows * channels];
            for y in 0..rows {
                for (xx, &(xmin, taps)) in h.bounds.iter().enumerate() {
                    for c in 0..channels {
                        let mut acc = round;
                        for t in 0..taps {
                            let p = src[(y * width + xmin + t) * channels + c];
                            acc += i32::from(p) * h.weights[xx * h.ksize + t];
                        }
                        out[(y * out_w + xx) * channels + c] = clip8(acc);
                    }
                }
            }
            out
        };
        let vertical = |src: &[u8], w: usize| {
            let mut out = vec![0u8; out_h * w * channels];
            for (yy, &(ymin, taps)) in v.bounds.iter().enumerate() {
                for i in 0..w * channels {
                    let mut acc = round;
                    for t in 0..taps {
                        let p = src[(ymin + t) * w * channels + i];
                        acc += i32::from(p) * v.weights[yy * v.ksize + t];
                    }
                    out[yy * w * channels + i] = clip8(acc);
                }
            }
            out
        };
        let (need_h, need_v) = (out_w != width, out_h != height);
        let (shrink_h, shrink_v) = (width as i64 - out_w as i64, height as i64 - out_h as i64);
        if need_h && need_v && shrink_v > 0 && shrink_v > 2 * shrink_h {
            // vertical first, then horizontal over the `height = out_h` intermediate
            let tmp = vertical(src, width);
            let mut out = vec![0u8; out_w * out_h * channels];
            for y in 0..out_h {
                let row = &tmp[y * width * channels..(y + 1) * width * channels];
                let r = horizontal(row, 1);
                out[y * out_w * channels..(y + 1) * out_w * channels].copy_from_slice(&r);
            }
            out
        } else {
            let tmp = if need_h {
                horizontal(src, height)
            } else {
                src.to_vec()
            };
            if need_v {
                vertical(&tmp, out_w)
            } else {
                tmp
            }
        }
    }

    /// Deterministic noise with some smooth structure, so rounding is exercised.
    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                ((i % 251) as u32 / 2 + (x % 128)) as u8
            })
            .collect()
    }

    #[test]
    fn fast_passes_and_windows_match_the_scalar_reference_exactly() {
        let cases = [
            (640, 480, 298, 224),
            (480, 640, 224, 298),
            (1001, 37, 224, 8),   // vertical shrinks little: horizontal first
            (50, 900, 12, 216),   // vertical shrinks far more: vertical first
            (17, 13, 224, 171),   // upscale
            (300, 224, 298, 224), // width only
            (224, 300, 224, 298), // height only
            (5, 3, 5, 3),
        ];
        for (seed, &(w, h, ow, oh)) in cases.iter().enumerate() {
            for channels in [1, 3, 4] {
                for resample in [Resample::Bicubic, Resample::Bilinear, Resample::Lanczos] {
                    let src = noise(w * h * channels, seed as u32 + 7);
                    let expected = reference(&src, (w, h, channels), (ow, oh), resample);
                    let got = resize(&src, w, h, channels, ow, oh, resample);
                    assert!(
                        got == expected,
                        "{w}x{h}->{ow}x{oh} c{channels} {resample:?}"
                    );
                    // A centred window equals the same crop of the full output.
                    let win = Window {
                        x: ow / 5,
                        y: oh / 7,
                        width: ow - ow / 5 - ow / 9,
                        height: oh - oh / 7,
                    };
                    let part = resize_window(&src, w, h, channels, ow, oh, resample, win);
                    assert!(
                        part == crop(&expected, ow, channels, win),
                        "window of {w}x{h}->{ow}x{oh} c{channels} {resample:?}"
                    );
                }
            }
        }
    }

    /// The AVX-512 pass writes its rows and not a byte more (a masked store once wrote past
    /// the end of the output and corrupted the heap).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_pass_writes_nothing_past_its_output() {
        if !clipkit_kernels::has_avx512() {
            return;
        }
        for channels in [1, 3, 4] {
            let (w, h, ow) = (640, 9, 298);
            let data = noise(w * h * channels, 3);
            let src = Plane {
                data: &data,
                width: w,
                height: h,
                channels,
            };
            let k = Coefficients::new(w, ow, Resample::Bicubic);
            let lw = LaneWeights::new(&k, channels);
            let n = ow * h * channels;
            let mut buf = vec![0xA5u8; n + 64];
            // SAFETY: AVX-512 checked above.
            unsafe {
                match channels {
                    1 => horizontal_rows_avx512::<1>(&src, &k, &lw, &mut buf[..n]),
                    3 => horizontal_rows_avx512::<3>(&src, &k, &lw, &mut buf[..n]),
                    _ => horizontal_rows_avx512::<4>(&src, &k, &lw, &mut buf[..n]),
                }
            }
            assert!(
                buf[n..].iter().all(|&b| b == 0xA5),
                "c{channels}: wrote past the end"
            );
        }
    }

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
