//! Test-only helpers shared by the JPEG decoders' tests. A leaf module (it uses TurboJPEG and
//! nothing of this crate), so `jpeg`'s and `jpeg_eighth`'s tests can both use it without
//! either decoder module depending on the other's tests.

use turbojpeg::{Decompressor, Image, PixelFormat, ScalingFactor};

/// libjpeg-turbo's own decode at 1/8 scale, as `(width, height, pixels)`: the reference the
/// 1/8-scale decoder is held to.
pub fn libjpeg_eighth(bytes: &[u8], format: PixelFormat) -> (usize, usize, Vec<u8>) {
    let mut d = Decompressor::new().unwrap();
    let header = d.read_header(bytes).unwrap();
    let factor = ScalingFactor::new(1, 8);
    d.set_scaling_factor(factor).unwrap();
    let scaled = header.scaled(factor);
    let mut image = Image {
        pixels: vec![0u8; scaled.width * scaled.height * format.size()],
        width: scaled.width,
        pitch: scaled.width * format.size(),
        height: scaled.height,
        format,
    };
    d.decompress(bytes, image.as_deref_mut()).unwrap();
    (scaled.width, scaled.height, image.pixels)
}
