//! [`Filter`]s on Milvus: the scalar fields written with every row, and the boolean
//! expression a filter becomes.
//!
//! The expression is built to be a *superset* of [`Filter::matches`], never a subset: what it
//! cannot say exactly (whole path components, a circle on the sphere, characters that are
//! special in `like` patterns or string literals) it says loosely, and the store checks every
//! candidate with `Filter::matches` itself, over-fetching until it has `k` matches or the
//! candidates run out. So the server does the selective work on its scalar fields and the
//! result is exactly what `matches` says, whatever the server's `like` escaping rules.

use std::path::{Component, Path, PathBuf};

use clipkit_image::PhotoMetadata;

use ::milvus::v2::prelude::ResultRow;

use super::{CAMERA, FILE_TYPE, LATITUDE, LONGITUDE, META, PATH, SIZE, TAKEN};
use crate::filter::{file_type, Filter, EARTH_RADIUS_M};
use crate::paths::path_bytes;
use crate::FileRecord;

/// Latitude and longitude of a file without a (complete) GPS position: far outside any
/// bounding box. Milvus-lite has no nullable fields, so a sentinel it is.
pub(super) const NO_POSITION: f64 = -1000.0;

/// Longest camera text, file type and metadata JSON a row holds, in bytes. EXIF makes and
/// models are short; [`bounded_meta`] cuts absurd ones so a hostile file cannot fail a batch.
pub(super) const MAX_CAMERA_BYTES: usize = 4096;
pub(super) const MAX_FILE_TYPE_BYTES: usize = 64;
pub(super) const MAX_META_BYTES: usize = 8192;
/// Characters kept of a make or model.
const MAX_NAME_CHARS: usize = 200;

/// The filter fields of one row, as written.
pub(super) struct Scalars {
    pub taken: i64,
    pub latitude: f64,
    pub longitude: f64,
    pub camera: String,
    pub file_type: String,
    pub meta: String,
}

/// The metadata as stored: makes and models cut to [`MAX_NAME_CHARS`], and a position only
/// when both coordinates are finite numbers.
pub(super) fn bounded_meta(meta: &PhotoMetadata) -> PhotoMetadata {
    let cut = |s: &Option<String>| s.as_ref().map(|s| s.chars().take(MAX_NAME_CHARS).collect());
    let mut meta = meta.clone();
    meta.make = cut(&meta.make);
    meta.model = cut(&meta.model);
    if !(meta.latitude.is_some_and(f64::is_finite) && meta.longitude.is_some_and(f64::is_finite)) {
        meta.latitude = None;
        meta.longitude = None;
    }
    meta
}

pub(super) fn scalars(file: &FileRecord) -> Scalars {
    let meta = bounded_meta(&file.meta);
    let (latitude, longitude) = match (meta.latitude, meta.longitude) {
        (Some(lat), Some(lon)) => (lat, lon),
        _ => (NO_POSITION, NO_POSITION),
    };
    let camera = meta
        .camera()
        .map(|c| truncate(c.to_lowercase(), MAX_CAMERA_BYTES))
        .unwrap_or_default();
    let file_type = file_type(&file.path)
        .filter(|t| t.len() <= MAX_FILE_TYPE_BYTES)
        .unwrap_or_default();
    let meta_json = serde_json::to_string(&meta).unwrap_or_else(|_| "{}".to_owned());
    Scalars {
        taken: FileRecord {
            meta: meta.clone(),
            ..file.clone()
        }
        .taken(),
        latitude,
        longitude,
        camera,
        file_type,
        meta: if meta_json.len() <= MAX_META_BYTES {
            meta_json
        } else {
            "{}".to_owned()
        },
    }
}

/// The metadata of a stored row (read with [`META`], [`LATITUDE`] and [`LONGITUDE`]): the
/// JSON, with the position from the DOUBLE fields, which hold it bit for bit where a JSON
/// round trip of a float may not.
pub(super) fn stored_meta(
    row: &ResultRow<'_>,
) -> Result<PhotoMetadata, Box<::milvus::v2::error::Error>> {
    let mut meta: PhotoMetadata = serde_json::from_str(row.get_str(META)?).unwrap_or_default();
    let (lat, lon) = (row.get_f64(LATITUDE)?, row.get_f64(LONGITUDE)?);
    if lat == NO_POSITION && lon == NO_POSITION {
        meta.latitude = None;
        meta.longitude = None;
    } else {
        meta.latitude = Some(lat);
        meta.longitude = Some(lon);
    }
    Ok(meta)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The boolean expression of `filter` on the scalar fields: true for every row `filter`
/// matches (and perhaps a few more); `None` when it restricts nothing.
pub(super) fn expression(filter: &Filter) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(t) = filter.after {
        parts.push(format!("{TAKEN} >= {t}"));
    }
    if let Some(t) = filter.before {
        parts.push(format!("{TAKEN} < {t}"));
    }
    if !filter.folders.is_empty() {
        let alternatives: Vec<String> = filter
            .folders
            .iter()
            .flat_map(|f| folder_patterns(f))
            .map(|p| format!("{PATH} like \"{p}\""))
            .collect();
        parts.push(format!("({})", alternatives.join(" or ")));
    }
    if let Some(near) = &filter.near {
        parts.push(near_clause(near.latitude, near.longitude, near.radius_m));
    }
    if let Some(camera) = &filter.camera {
        parts.push(format!(
            "{CAMERA} like \"%{}%\"",
            like_literal(&camera.to_lowercase())
        ));
    }
    if !filter.file_types.is_empty() {
        // Only types that need no quoting go to the server; otherwise the clause is left
        // to the client check.
        let types: Vec<String> = filter
            .file_types
            .iter()
            .map(|t| file_type(Path::new(&format!("x.{}", t.trim_start_matches('.')))))
            .map(|t| t.unwrap_or_default())
            .collect();
        let plain = |t: &String| {
            !t.is_empty()
                && t.len() <= MAX_FILE_TYPE_BYTES
                && t.chars().all(|c| c.is_ascii_alphanumeric())
        };
        if types.iter().all(plain) {
            let list: Vec<String> = types.iter().map(|t| format!("\"{t}\"")).collect();
            parts.push(format!("{FILE_TYPE} in [{}]", list.join(", ")));
        }
    }
    if let Some(min) = filter.min_size.and_then(|s| i64::try_from(s).ok()) {
        parts.push(format!("{SIZE} >= {min}"));
    }
    if let Some(max) = filter.max_size.and_then(|s| i64::try_from(s).ok()) {
        parts.push(format!("{SIZE} <= {max}"));
    }
    (!parts.is_empty()).then(|| parts.join(" and "))
}

/// `like` patterns for the stored paths under `folder`: its text followed by anything, and
/// the hex-escaped form that non-UTF-8 paths are stored in (see
/// [`encode_path`](crate::paths::encode_path)), where the escape's leading NUL is matched by
/// `_`. The folder is taken component by component, as `Path::starts_with` does.
fn folder_patterns(folder: &Path) -> Vec<String> {
    let normal: PathBuf = folder
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let mut patterns = Vec::new();
    if let Some(text) = normal.to_str() {
        patterns.push(format!("{}%", like_literal(text)));
    }
    let hex: String = path_bytes(&normal)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    patterns.push(format!("_hex:{hex}%"));
    patterns
}

/// `s` inside a double-quoted `like` pattern, with every character that a pattern or a string
/// literal treats specially (`%`, `_`, `\`, quotes, control characters) replaced by `_`, which
/// matches any one character: a looser pattern needs no escaping, whose rules differ between
/// Milvus versions, and the client check makes the result exact.
fn like_literal(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '%' | '_' | '\\' | '"' | '\'') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A box around the circle (with a margin), or-ed with any out-of-range position, so no row
/// the haversine distance of [`Filter::matches`] accepts is left out.
fn near_clause(lat: f64, lon: f64, radius_m: f64) -> String {
    // Positions no bounding-box reasoning holds for: let the client decide on them.
    let odd = format!(
        "{LATITUDE} > 90.0 or ({LATITUDE} < -90.0 and {LATITUDE} > {NO_POSITION}) \
         or {LONGITUDE} > 180.0 or ({LONGITUDE} < -180.0 and {LONGITUDE} > {NO_POSITION})"
    );
    let valid_centre = lat.abs() <= 90.0 && lon.abs() <= 180.0 && radius_m.is_finite();
    if !valid_centre {
        return format!("{LATITUDE} > {NO_POSITION}");
    }
    const MARGIN_DEG: f64 = 1e-6;
    let dlat = (radius_m.max(0.0) / EARTH_RADIUS_M).to_degrees() * 1.001 + MARGIN_DEG;
    let lat_lo = (lat - dlat).max(-90.0);
    let lat_hi = (lat + dlat).min(90.0);
    let mut bbox = format!("{LATITUDE} >= {lat_lo:.7} and {LATITUDE} <= {lat_hi:.7}");
    let widest = lat_lo.abs().max(lat_hi.abs());
    if widest < 89.0 {
        let dlon = dlat / widest.to_radians().cos() * 1.001 + MARGIN_DEG;
        if dlon < 180.0 {
            let (lo, hi) = (lon - dlon, lon + dlon);
            let lon_clause = if lo < -180.0 {
                format!(
                    "({LONGITUDE} >= {:.7} or {LONGITUDE} <= {hi:.7})",
                    lo + 360.0
                )
            } else if hi > 180.0 {
                format!(
                    "({LONGITUDE} >= {lo:.7} or {LONGITUDE} <= {:.7})",
                    hi - 360.0
                )
            } else {
                format!("{LONGITUDE} >= {lo:.7} and {LONGITUDE} <= {hi:.7}")
            };
            bbox = format!("{bbox} and {lon_clause}");
        }
    }
    format!("(({bbox}) or {odd})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::distance_m;

    #[test]
    fn an_empty_filter_has_no_expression() {
        assert_eq!(expression(&Filter::default()), None);
    }

    #[test]
    fn special_characters_become_single_character_wildcards() {
        assert_eq!(like_literal(r#"a%b_c\d"e'f"#), "a_b_c_d_e_f");
        let filter = Filter {
            folders: vec![PathBuf::from("/p/./100%/")],
            camera: Some("iPhone \"X\"".into()),
            ..Filter::default()
        };
        let e = expression(&filter).unwrap();
        assert!(e.contains(r#"path like "/p/100_%""#), "{e}");
        assert!(e.contains(r#"camera like "%iphone _x_%""#), "{e}");
        assert!(e.contains(r#"path like "_hex:2f702f31303025%""#), "{e}");
    }

    #[test]
    fn the_box_holds_the_circle() {
        // Points on the circle's edge, all around, at several places including the poles
        // and across the antimeridian, must satisfy the box the clause describes.
        for &(lat, lon) in &[(48.85, 2.35), (0.0, 179.99), (-33.0, -179.9), (88.9, 10.0)] {
            let radius = 50_000.0;
            let clause = near_clause(lat, lon, radius);
            let inside = |plat: f64, plon: f64| eval_box(&clause, plat, plon);
            for step in 0..360 {
                let bearing = (step as f64).to_radians();
                let d = radius / EARTH_RADIUS_M * 0.999_999;
                let (p1, l1) = (lat.to_radians(), lon.to_radians());
                let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * bearing.cos()).asin();
                let l2 =
                    l1 + (bearing.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
                let (plat, mut plon) = (p2.to_degrees(), l2.to_degrees());
                if plon > 180.0 {
                    plon -= 360.0;
                }
                if plon < -180.0 {
                    plon += 360.0;
                }
                assert!(distance_m(lat, lon, plat, plon) <= radius);
                assert!(inside(plat, plon), "{clause}: ({plat}, {plon}) left out");
            }
        }
        assert!(!eval_box(
            &near_clause(10.0, 10.0, 1e3),
            NO_POSITION,
            NO_POSITION
        ));
    }

    /// A tiny evaluator of the clauses `near_clause` writes (numbers compared with fields,
    /// `and`, `or`, parentheses), so the geometry is tested without a server.
    fn eval_box(clause: &str, lat: f64, lon: f64) -> bool {
        let spaced = clause.replace('(', " ( ").replace(')', " ) ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        let mut pos = 0;
        fn or(t: &[&str], p: &mut usize, lat: f64, lon: f64) -> bool {
            let mut v = and(t, p, lat, lon);
            while *p < t.len() && t[*p] == "or" {
                *p += 1;
                v |= and(t, p, lat, lon);
            }
            v
        }
        fn and(t: &[&str], p: &mut usize, lat: f64, lon: f64) -> bool {
            let mut v = atom(t, p, lat, lon);
            while *p < t.len() && t[*p] == "and" {
                *p += 1;
                v &= atom(t, p, lat, lon);
            }
            v
        }
        fn atom(t: &[&str], p: &mut usize, lat: f64, lon: f64) -> bool {
            if t[*p] == "(" {
                *p += 1;
                let v = or(t, p, lat, lon);
                *p += 1;
                return v;
            }
            let field = if t[*p] == LATITUDE { lat } else { lon };
            let op = t[*p + 1];
            let x: f64 = t[*p + 2].parse().unwrap();
            *p += 3;
            match op {
                ">=" => field >= x,
                "<=" => field <= x,
                ">" => field > x,
                "<" => field < x,
                _ => panic!("{op}"),
            }
        }
        or(&tokens, &mut pos, lat, lon)
    }
}
