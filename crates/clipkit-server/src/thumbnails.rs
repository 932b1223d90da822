//! Thumbnails of a collection's images, by the store's stable path id.
//!
//! Only files the store holds can be served: an id is looked up among the paths search
//! results returned (remembered as they go out) and, failing that, among the store's files
//! (re-read at most every few seconds), never taken from the client as a path. Rendered
//! thumbnails are kept in a small cache, since a result grid asks for the same ones again.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clipkit_core::image::{DecodeOptions, Pixels};
use clipkit_index::paths::path_id;
use clipkit_index::Store;

use crate::error::{pixel_limit_hint, store_error, ApiError};

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 256;
const RESCAN_EVERY: Duration = Duration::from_secs(5);
const KNOWN_PATHS: usize = 200_000;
const CACHED_THUMBNAILS: usize = 512;

/// Rendered JPEGs by id, and the order they were added in (oldest evicted first).
type JpegCache = (HashMap<i64, Vec<u8>>, VecDeque<i64>);

#[derive(Debug, Default)]
pub struct Thumbnails {
    known: Mutex<HashMap<i64, PathBuf>>,
    last_scan: Mutex<Option<Instant>>,
    cache: Mutex<JpegCache>,
}

impl Thumbnails {
    /// Remembers a result's path and returns the id its thumbnail is served under.
    pub fn remember(&self, path: &Path) -> i64 {
        let id = path_id(path);
        let mut known = lock(&self.known);
        if known.len() >= KNOWN_PATHS {
            known.clear();
        }
        known.insert(id, path.to_path_buf());
        id
    }

    /// The stored path with this id, if the store has one. Blocking (may read the store).
    pub fn path_of(&self, store: &dyn Store, id: i64) -> Result<Option<PathBuf>, ApiError> {
        if let Some(p) = lock(&self.known).get(&id) {
            return Ok(Some(p.clone()));
        }
        {
            let mut last = lock(&self.last_scan);
            if last.is_some_and(|t| t.elapsed() < RESCAN_EVERY) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let files = store
            .files()
            .map_err(|e| store_error("cannot list the collection", &e))?;
        Ok(files
            .into_iter()
            .find(|f| f.id() == id)
            .map(|f| self.remember_path(f.path)))
    }

    fn remember_path(&self, path: PathBuf) -> PathBuf {
        self.remember(&path);
        path
    }

    /// A JPEG thumbnail of the file, from the cache or rendered now. Blocking.
    pub fn render(&self, id: i64, path: &Path, max_pixels: u64) -> Result<Vec<u8>, ApiError> {
        if let Some(jpeg) = lock(&self.cache).0.get(&id) {
            return Ok(jpeg.clone());
        }
        let options = DecodeOptions {
            max_pixels,
            apply_exif_orientation: true,
            // A thumbnail needs no more pixels than it shows.
            draft_shortest_edge: Some(THUMBNAIL_SIZE),
        };
        let decoded = clipkit_core::image::decode_file(path, &options).map_err(|e| {
            ApiError::NotFound(format!(
                "the image behind this thumbnail is unreadable: {e}{}",
                pixel_limit_hint(&e)
            ))
        })?;
        let rgb = match decoded.pixels {
            Pixels::Rgb(rgb) => rgb,
            Pixels::Rgba(rgba) => clipkit_core::image::pil::composite_on_white(&rgba),
        };
        let scale = f64::from(THUMBNAIL_SIZE) / f64::from(rgb.width().max(rgb.height()));
        let rgb = if scale < 1.0 {
            let w = ((f64::from(rgb.width()) * scale).round() as u32).max(1);
            let h = ((f64::from(rgb.height()) * scale).round() as u32).max(1);
            image::imageops::thumbnail(&rgb, w, h)
        } else {
            rgb
        };
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode_image(&rgb)
            .map_err(|e| ApiError::Internal(format!("cannot encode the thumbnail: {e}")))?;
        let mut cache = lock(&self.cache);
        if cache.0.len() >= CACHED_THUMBNAILS {
            if let Some(old) = cache.1.pop_front() {
                cache.0.remove(&old);
            }
        }
        cache.0.insert(id, jpeg.clone());
        cache.1.push_back(id);
        Ok(jpeg)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
