//! The integer arithmetic of the PIL operations that CLIP preprocessing passes through.
//!
//! transformers and OpenAI preprocess with PIL, whose 8-bit operations round in particular
//! ways; reproducing them exactly is what keeps clipkit within one uint8 step of the
//! reference. The formulas are PIL's (AlphaComposite.c, Convert.c), the code is ours.

use image::{RgbImage, RgbaImage};

/// PIL's `(a * b) / 255` with rounding (`MULDIV255`).
fn mul_div_255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// `Image.alpha_composite(white, rgba).convert("RGB")`: what transformers' `convert_to_rgb`
/// does to every non-RGB image, putting transparent pixels on white.
pub fn composite_on_white(rgba: &RgbaImage) -> RgbImage {
    const PRECISION_BITS: u32 = 7;
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src[3]);
        if a == 0 {
            dst.0 = [255, 255, 255];
            continue;
        }
        // With an opaque white background, PIL's general blend reduces to these coefficients.
        let coef1 = a << PRECISION_BITS;
        let coef2 = (255 << PRECISION_BITS) - coef1;
        for c in 0..3 {
            let t = u32::from(src[c]) * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
            dst[c] = ((((t >> 8) + t) >> 8) >> PRECISION_BITS) as u8;
        }
    }
    out
}

/// RGBA → RGBa (premultiplied), as PIL converts before resampling an RGBA image.
pub fn premultiply(rgba: &mut RgbaImage) {
    for p in rgba.pixels_mut() {
        let a = u32::from(p[3]);
        for c in 0..3 {
            p[c] = mul_div_255(u32::from(p[c]), a) as u8;
        }
    }
}

/// RGBa → RGBA, PIL's inverse of [`premultiply`] (truncating division, clipped).
pub fn unpremultiply(rgba: &mut RgbaImage) {
    for p in rgba.pixels_mut() {
        let a = u32::from(p[3]);
        if a == 0 || a == 255 {
            continue;
        }
        for c in 0..3 {
            p[c] = ((255 * u32::from(p[c])) / a).min(255) as u8;
        }
    }
}

/// Output size when the shortest edge becomes `target`: the long edge is
/// `int(target * long / short)`, as both transformers and torchvision compute it.
pub fn shortest_edge_size(width: u32, height: u32, target: u32) -> (u32, u32) {
    let scaled =
        |long: u32, short: u32| (f64::from(target) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (target, scaled(height, width).max(1))
    } else {
        (scaled(width, height).max(1), target)
    }
}

/// How the centre crop's offset is rounded when the margin is odd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropRounding {
    /// transformers: `(size - crop) // 2`.
    Floor,
    /// OpenAI/torchvision: `int(round((size - crop) / 2.0))`, Python's round half to even.
    HalfToEven,
    /// open_clip's `CenterCropOrPad`: where the image is smaller than the crop it is padded by
    /// `(crop - size) // 2` before it (the offset rounds towards zero), otherwise as
    /// [`HalfToEven`](Self::HalfToEven).
    PadFloor,
}

/// Offset of the crop window; negative when the image is smaller than the crop (it is then
/// padded with zeros).
pub fn crop_offset(size: u32, crop: u32, rounding: CropRounding) -> i64 {
    let margin = i64::from(size) - i64::from(crop);
    match rounding {
        CropRounding::Floor => margin.div_euclid(2),
        CropRounding::PadFloor if margin < 0 => -((-margin) / 2),
        CropRounding::HalfToEven | CropRounding::PadFloor => {
            let half = margin.div_euclid(2);
            if margin.rem_euclid(2) == 1 && half.rem_euclid(2) == 1 {
                half + 1
            } else {
                half
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_matches_known_pil_values() {
        // Values computed with PIL: alpha_composite(white, (r,g,b,a)).
        let mut img = RgbaImage::new(4, 1);
        img.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        img.put_pixel(1, 0, image::Rgba([10, 200, 30, 255]));
        img.put_pixel(2, 0, image::Rgba([0, 0, 0, 128]));
        img.put_pixel(3, 0, image::Rgba([100, 50, 0, 1]));
        let out = composite_on_white(&img);
        assert_eq!(out.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [10, 200, 30]);
        assert_eq!(out.get_pixel(2, 0).0, [127, 127, 127]);
        assert_eq!(out.get_pixel(3, 0).0, [254, 254, 254]);
    }

    #[test]
    fn premultiply_round_trips_opaque_and_keeps_alpha() {
        let mut img =
            RgbaImage::from_raw(2, 1, vec![200, 100, 50, 255, 200, 100, 50, 128]).unwrap();
        premultiply(&mut img);
        assert_eq!(img.get_pixel(0, 0).0, [200, 100, 50, 255]);
        assert_eq!(img.get_pixel(1, 0).0, [100, 50, 25, 128]);
        unpremultiply(&mut img);
        assert_eq!(img.get_pixel(1, 0).0, [199, 99, 49, 128]);
    }

    #[test]
    fn shortest_edge_truncates_like_python_int() {
        assert_eq!(shortest_edge_size(640, 480, 224), (298, 224));
        assert_eq!(shortest_edge_size(300, 451, 224), (224, 336));
        assert_eq!(shortest_edge_size(5, 3, 224), (373, 224));
        assert_eq!(shortest_edge_size(224, 224, 224), (224, 224));
        assert_eq!(shortest_edge_size(10_000, 1, 224), (2_240_000, 224));
    }

    #[test]
    fn crop_offsets_round_as_each_reference_does() {
        use CropRounding::*;
        assert_eq!(crop_offset(257, 224, Floor), 16);
        assert_eq!(crop_offset(257, 224, HalfToEven), 16); // round(16.5) == 16
        assert_eq!(crop_offset(259, 224, Floor), 17);
        assert_eq!(crop_offset(221, 224, PadFloor), -1); // pad 3 // 2 = 1 before
        assert_eq!(crop_offset(221, 224, HalfToEven), -2); // round(-1.5) == -2
        assert_eq!(crop_offset(257, 224, PadFloor), 16);
        assert_eq!(crop_offset(259, 224, HalfToEven), 18); // round(17.5) == 18
        assert_eq!(crop_offset(224, 224, HalfToEven), 0);
        assert_eq!(crop_offset(200, 224, Floor), -12);
    }
}
