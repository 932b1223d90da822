//! Images as clients send them (base64, `data:` URIs, multipart files) to model inputs.
//!
//! Decoding and preprocessing are CPU work, so they run on tokio's blocking pool, a bounded
//! number at a time; the pixel limit is checked from the image header before any pixel is
//! decoded. Each image succeeds or fails on its own, named by its position in the request.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use clipkit_core::image::{DecodeOptions, Pixels};
use clipkit_core::Preprocessor;
use image::RgbImage;
use tokio::sync::Semaphore;

use crate::error::{image_error, ApiError};
use crate::metrics::Metrics;

/// Bytes of an image given as a `data:image/...;base64,` URI or as bare base64.
/// URLs are refused: the server never fetches anything on a client's behalf.
pub fn parse_image_string(index: usize, s: &str) -> Result<Vec<u8>, ApiError> {
    let s = s.trim();
    let bad = |message: String| ApiError::BadImage { index, message };
    let payload = if let Some(rest) = s.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("a data: URI needs a comma before its data".into()))?;
        if !meta.split(';').any(|p| p.eq_ignore_ascii_case("base64")) {
            return Err(bad("only base64 data: URIs are supported".into()));
        }
        data
    } else if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:") {
        return Err(bad(
            "image URLs are not fetched; send the image itself as a data: URI or base64".into(),
        ));
    } else {
        s
    };
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(bad("the image is empty".into()));
    }
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(&compact).ok())
        .ok_or_else(|| bad("not valid base64".into()))
}

/// A decoded image: the model input, and the picture as a person sees it (for charts).
#[derive(Debug)]
pub struct Decoded {
    pub pixels: Vec<f32>,
    pub shown: Option<RgbImage>,
}

/// Decodes and preprocesses on the blocking pool, `concurrency` images at a time.
#[derive(Debug, Clone)]
pub struct Decoder {
    preprocessor: Arc<Preprocessor>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Decoder {
    pub fn new(
        preprocessor: &Preprocessor,
        max_pixels: u64,
        concurrency: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut preprocessor = preprocessor.clone();
        preprocessor.decode = DecodeOptions {
            max_pixels: max_pixels.min(preprocessor.decode.max_pixels),
            ..preprocessor.decode
        };
        Self {
            preprocessor: Arc::new(preprocessor),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            metrics,
        }
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Decodes every image; the first failure (by position) is the error.
    pub async fn decode_all(
        &self,
        images: Vec<Vec<u8>>,
        keep_shown: bool,
    ) -> Result<Vec<Decoded>, ApiError> {
        let tasks = images
            .into_iter()
            .enumerate()
            .map(|(index, bytes)| self.decode_one(index, bytes, keep_shown));
        futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .collect()
    }

    async fn decode_one(
        &self,
        index: usize,
        bytes: Vec<u8>,
        keep_shown: bool,
    ) -> Result<Decoded, ApiError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        let preprocessor = self.preprocessor.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let name = format!("input {index}");
            let result = preprocessor
                .decode_bytes(Path::new(&name), &bytes)
                .map(|decoded| {
                    let pixels = preprocessor.normalize(&preprocessor.resize_and_crop(&decoded));
                    let shown = keep_shown.then(|| match decoded.pixels {
                        Pixels::Rgb(rgb) => rgb,
                        Pixels::Rgba(rgba) => clipkit_core::image::pil::composite_on_white(&rgba),
                    });
                    Decoded { pixels, shown }
                })
                .map_err(|e| image_error(index, &e));
            metrics
                .decode_seconds
                .observe(started.elapsed().as_secs_f64());
            if result.is_err() {
                metrics.decode_failed();
            }
            result
        })
        .await
        .map_err(|e| ApiError::Internal(format!("image decoding task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_uris_and_bare_base64_decode_to_the_same_bytes() {
        let bytes = b"\x89PNG fake";
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(parse_image_string(0, &b64).unwrap(), bytes);
        let uri = format!("data:image/png;base64,{b64}");
        assert_eq!(parse_image_string(0, &uri).unwrap(), bytes);
        let wrapped = format!("{}\n{}", &b64[..4], &b64[4..]);
        assert_eq!(parse_image_string(0, &wrapped).unwrap(), bytes);
    }

    #[test]
    fn urls_and_garbage_are_refused_with_their_index() {
        for (input, needle) in [
            ("https://example.com/cat.png", "not fetched"),
            ("data:image/png,rawdata", "base64"),
            ("data:image/png;base64", "comma"),
            ("@@@not base64@@@", "not valid base64"),
            ("", "empty"),
        ] {
            match parse_image_string(3, input) {
                Err(ApiError::BadImage { index: 3, message }) => {
                    assert!(message.contains(needle), "{input}: {message}")
                }
                other => panic!("{input}: {other:?}"),
            }
        }
    }
}
