//! Which entries a search or a labelling may return: by capture date, folder, place, camera,
//! file type and size — the restrictions a photo library is searched with.
//!
//! A [`Filter`] is plain data. [`Filter::matches`] is its meaning, and every backend's faster
//! execution of it (SQL columns and a graph predicate on the embedded store, a boolean
//! expression on Milvus) must agree with it; the tests hold them to brute force over
//! `matches`.

use std::path::PathBuf;

use serde::Serialize;

use crate::store::FileRecord;

/// A conjunction of restrictions; the default restricts nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Filter {
    /// Taken at or after this time (seconds, on the photo's own clock as
    /// [`PhotoMetadata::taken`](clipkit_image::PhotoMetadata::taken); a file without a capture
    /// date counts as taken at its modification time, in UTC).
    pub after: Option<i64>,
    /// Taken before this time (exclusive), same clock as `after`.
    pub before: Option<i64>,
    /// Under any of these folders (whole path components: `/a/b` does not contain `/a/bc`).
    pub folders: Vec<PathBuf>,
    /// Within a distance of a point; files without a GPS position never match.
    pub near: Option<Near>,
    /// Case-insensitive substring of the camera (`make model`); files without one never match.
    pub camera: Option<String>,
    /// File extensions, lower case without the dot (`jpg`, `png`); `jpeg` and `jpg`, `tif` and
    /// `tiff` name the same type.
    pub file_types: Vec<String>,
    /// File size bounds in bytes, inclusive.
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
}

/// A circle on the Earth's surface.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Near {
    pub latitude: f64,
    pub longitude: f64,
    pub radius_m: f64,
}

/// Mean Earth radius (IUGG), for great-circle distances.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

impl Filter {
    /// Whether this filter lets everything through.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The meaning of the filter: whether `file` passes every restriction.
    pub fn matches(&self, file: &FileRecord) -> bool {
        let taken = file.taken();
        if self.after.is_some_and(|t| taken < t) || self.before.is_some_and(|t| taken >= t) {
            return false;
        }
        if !self.folders.is_empty() && !self.folders.iter().any(|f| file.path.starts_with(f)) {
            return false;
        }
        if let Some(near) = &self.near {
            let (Some(lat), Some(lon)) = (file.meta.latitude, file.meta.longitude) else {
                return false;
            };
            if distance_m(near.latitude, near.longitude, lat, lon) > near.radius_m {
                return false;
            }
        }
        if let Some(wanted) = &self.camera {
            let Some(camera) = file.meta.camera() else {
                return false;
            };
            if !camera.to_lowercase().contains(&wanted.to_lowercase()) {
                return false;
            }
        }
        if !self.file_types.is_empty() {
            let Some(ext) = file_type(&file.path) else {
                return false;
            };
            if !self.file_types.iter().any(|t| canonical_type(t) == ext) {
                return false;
            }
        }
        if self.min_size.is_some_and(|s| file.size < s)
            || self.max_size.is_some_and(|s| file.size > s)
        {
            return false;
        }
        true
    }
}

/// The canonical file type of a path: its extension, lower case, `jpeg` → `jpg`, `tif` → `tiff`.
pub fn file_type(path: &std::path::Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    Some(canonical_type(ext))
}

pub(crate) fn canonical_type(ext: &str) -> String {
    let ext = ext.trim_start_matches('.').to_lowercase();
    match ext.as_str() {
        "jpeg" | "jpe" | "jfif" => "jpg".to_owned(),
        "tif" => "tiff".to_owned(),
        _ => ext,
    }
}

/// Great-circle distance in metres (haversine).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}
