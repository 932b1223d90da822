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

/// What `bytes` (a whole image file) say about the photo: the EXIF block wherever the
/// container keeps it (JPEG APP1, TIFF, PNG `eXIf`, WebP `EXIF`, HEIF), and the pixel size
/// from the image header. Never fails: whatever cannot be read is `None`.
pub fn read_metadata(bytes: &[u8]) -> PhotoMetadata {
    let (width, height) = match dimensions(bytes) {
        Some((w, h)) => (Some(w), Some(h)),
        None => (None, None),
    };
    let mut meta = PhotoMetadata {
        width,
        height,
        ..PhotoMetadata::default()
    };
    if let Some(exif) = read_exif(bytes) {
        fill_from_exif(&mut meta, &exif);
    }
    meta
}

/// The EXIF block, or what could be parsed of a damaged one (a broken entry in one IFD
/// should not cost the date stored in another).
fn read_exif(bytes: &[u8]) -> Option<exif::Exif> {
    exif::Reader::new()
        .continue_on_error(true)
        .read_from_container(&mut std::io::Cursor::new(bytes))
        .or_else(|e| e.distill_partial_result(|_| {}))
        .ok()
}

fn fill_from_exif(meta: &mut PhotoMetadata, exif: &exif::Exif) {
    use exif::{In, Tag};
    let field = |tag: Tag| exif.get_field(tag, In::PRIMARY).map(|f| &f.value);

    // DateTimeOriginal is when the shutter fired; Digitized (a scan) and DateTime (last
    // edit) are the fallbacks cameras and editors leave when it is absent.
    meta.taken = [Tag::DateTimeOriginal, Tag::DateTimeDigitized, Tag::DateTime]
        .into_iter()
        .find_map(|tag| field(tag).and_then(ascii).and_then(wall_clock_seconds));
    meta.offset_minutes = field(Tag::OffsetTimeOriginal)
        .and_then(ascii)
        .and_then(offset_minutes);
    meta.latitude = coordinate(
        field(Tag::GPSLatitude),
        field(Tag::GPSLatitudeRef),
        b'S',
        90.0,
    );
    meta.longitude = coordinate(
        field(Tag::GPSLongitude),
        field(Tag::GPSLongitudeRef),
        b'W',
        180.0,
    );
    // A position needs both halves; half of one is no place.
    if meta.latitude.is_none() || meta.longitude.is_none() {
        meta.latitude = None;
        meta.longitude = None;
    }
    meta.make = field(Tag::Make).and_then(ascii).and_then(text);
    meta.model = field(Tag::Model).and_then(ascii).and_then(text);
}

/// The first string of an ASCII value.
fn ascii(value: &exif::Value) -> Option<&[u8]> {
    match value {
        exif::Value::Ascii(strings) => strings.first().map(Vec::as_slice),
        _ => None,
    }
}

/// Cameras pad Make and Model with NULs and spaces; an all-blank value is no value.
fn text(bytes: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let s: String = s.chars().filter(|&c| c != '\0').collect();
    (!s.is_empty()).then_some(s)
}

/// `YYYY:MM:DD HH:MM:SS` as seconds since 1970-01-01 00:00 of the same wall clock; `None`
/// for blank, zeroed (`0000:00:00 …`, what cameras write when they have no clock) or
/// impossible dates.
fn wall_clock_seconds(bytes: &[u8]) -> Option<i64> {
    let dt = exif::DateTime::from_ascii(bytes).ok()?;
    let (y, mo, d) = (i64::from(dt.year), u32::from(dt.month), u32::from(dt.day));
    if y == 0 || !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return None;
    }
    if dt.hour > 23 || dt.minute > 59 || dt.second > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(
        days * 86_400
            + i64::from(dt.hour) * 3600
            + i64::from(dt.minute) * 60
            + i64::from(dt.second),
    )
}

/// `+HH:MM` / `-HH:MM` in minutes; offsets beyond ±14 h are not on any clock.
fn offset_minutes(bytes: &[u8]) -> Option<i32> {
    let mut dt = exif::DateTime {
        year: 1970,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        nanosecond: None,
        offset: None,
    };
    dt.parse_offset(bytes).ok()?;
    let minutes = i32::from(dt.offset?);
    (minutes.abs() <= 14 * 60).then_some(minutes)
}

/// Degrees, minutes, seconds (three rationals) and a hemisphere letter as signed degrees.
fn coordinate(
    dms: Option<&exif::Value>,
    reference: Option<&exif::Value>,
    negative: u8,
    limit: f64,
) -> Option<f64> {
    let exif::Value::Rational(parts) = dms? else {
        return None;
    };
    let reference = reference.and_then(ascii)?.first()?.to_ascii_uppercase();
    let part = |i: usize| {
        parts
            .get(i)
            .filter(|r| r.denom != 0)
            .map(exif::Rational::to_f64)
    };
    let degrees = part(0)? + part(1).unwrap_or(0.0) / 60.0 + part(2).unwrap_or(0.0) / 3600.0;
    if !degrees.is_finite() || degrees > limit {
        return None;
    }
    Some(if reference == negative {
        -degrees
    } else {
        degrees
    })
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Width and height from the image header, without decoding pixels (nor, for a JPEG, copying
/// the file as the `image` crate's decoder would).
fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    if crate::jpeg::is_jpeg(bytes) {
        return crate::jpeg::frame_size(bytes);
    }
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_dates_count_from_the_epoch() {
        assert_eq!(wall_clock_seconds(b"1970:01:01 00:00:00"), Some(0));
        assert_eq!(
            wall_clock_seconds(b"2000:03:01 00:00:01"),
            Some(951_868_801)
        );
        assert_eq!(wall_clock_seconds(b"1969:12:31 23:59:59"), Some(-1));
        for bad in [
            &b"0000:00:00 00:00:00"[..],
            b"2023:02:29 00:00:00",
            b"2023:13:01 00:00:00",
            b"2023:01:01 24:00:00",
            b"    :  :     :  :  ",
            b"2023-01-01 00:00:00",
            b"2023:01",
        ] {
            assert_eq!(
                wall_clock_seconds(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            wall_clock_seconds(b"2024:02:29 12:00:00"),
            Some(1_709_208_000)
        );
    }

    #[test]
    fn offsets_and_text() {
        assert_eq!(offset_minutes(b"+05:30"), Some(330));
        assert_eq!(offset_minutes(b"-03:00"), Some(-180));
        assert_eq!(offset_minutes(b"+99:00"), None);
        assert_eq!(offset_minutes(b"05:30"), None);
        assert_eq!(text(b"  Canon\0\0"), Some("Canon".into()));
        assert_eq!(text(b"\0\0 "), None);
    }

    #[test]
    fn bytes_that_are_no_image_have_no_metadata() {
        assert_eq!(read_metadata(b""), PhotoMetadata::default());
        assert_eq!(
            read_metadata(b"not an image at all"),
            PhotoMetadata::default()
        );
        assert_eq!(read_metadata(&[0xFF, 0xD8, 0xFF]), PhotoMetadata::default());
    }
}
