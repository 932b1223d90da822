//! What a photo file says about itself — when it was taken, where, with which camera — read
//! from its EXIF block so that collections can be filtered by date, place and camera.
//!
//! Reading metadata never fails: a file without EXIF, or with a garbled block, simply has no
//! capture date, position or camera. Hostile bytes must not panic here either.

use serde::{Deserialize, Serialize};

/// Capture metadata of one image file. Every field is optional: most screenshots and web
/// images carry none of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhotoMetadata {
    /// When the photo was taken, as the camera's clock read (EXIF `DateTimeOriginal`, else
    /// `DateTime`), in seconds since 1970-01-01 00:00 *of that wall-clock time*: the date a
    /// user types in a filter is the date on the photo, whatever time zone it was taken in.
    pub taken: Option<i64>,
    /// The UTC offset of `taken`, in minutes (EXIF `OffsetTimeOriginal`), where the file
    /// records it.
    pub offset_minutes: Option<i32>,
    /// GPS position in degrees (north and east positive), WGS 84 as EXIF stores it.
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Camera maker and model (EXIF `Make`, `Model`), trimmed.
    pub make: Option<String>,
    pub model: Option<String>,
    /// Pixel size as stored (before EXIF orientation).
    pub width: Option<u32>,
    pub height: Option<u32>,
}

impl PhotoMetadata {
    /// `make model`, without the maker repeated when the model already starts with it
    /// ("Canon Canon EOS 5D" → "Canon EOS 5D").
    pub fn camera(&self) -> Option<String> {
        match (self.make.as_deref(), self.model.as_deref()) {
            (Some(make), Some(model)) if model.to_lowercase().starts_with(&make.to_lowercase()) => {
                Some(model.to_owned())
            }
            (Some(make), Some(model)) => Some(format!("{make} {model}")),
            (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
            (None, None) => None,
        }
    }
}
