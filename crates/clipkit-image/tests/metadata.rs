//! Capture metadata read from the fixture photos equals what Pillow's `getexif()` reads from
//! them (`fixtures/photos-exif/reference.json`, written by
//! `tools/fixtures/make_exif_photos.py`), and damaged EXIF blocks never panic the reader.

use std::path::{Path, PathBuf};

use clipkit_image::metadata::{read_metadata, PhotoMetadata};

fn photos() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/photos-exif")
}

fn reference() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(photos().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn metadata_matches_pillows_reading_of_every_fixture() {
    let reference = reference();
    assert!(reference.len() >= 8, "{} fixtures", reference.len());
    for (name, want) in &reference {
        let bytes = std::fs::read(photos().join(name)).unwrap();
        let got = read_metadata(&bytes);
        let int = |key: &str| want[key].as_i64();
        let text = |key: &str| want[key].as_str().map(str::to_owned);
        assert_eq!(got.taken, int("taken"), "{name}: taken");
        assert_eq!(
            got.offset_minutes.map(i64::from),
            int("offset_minutes"),
            "{name}: offset"
        );
        assert_eq!(got.make, text("make"), "{name}: make");
        assert_eq!(got.model, text("model"), "{name}: model");
        assert_eq!(got.width.map(i64::from), int("width"), "{name}: width");
        assert_eq!(got.height.map(i64::from), int("height"), "{name}: height");
        for (key, value) in [("latitude", got.latitude), ("longitude", got.longitude)] {
            match (value, want[key].as_f64()) {
                (None, None) => {}
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{name}: {key} {g} vs {w}"),
                (g, w) => panic!("{name}: {key} {g:?} vs {w:?}"),
            }
        }
    }
    // The fixtures cover what the reader must get right: all four hemispheres, an offset west
    // of Greenwich, a date without DateTimeOriginal, NUL-padded text, no EXIF at all, and
    // EXIF in PNG and WebP containers.
    let all: Vec<PhotoMetadata> = reference
        .keys()
        .map(|n| read_metadata(&std::fs::read(photos().join(n)).unwrap()))
        .collect();
    assert!(all.iter().any(|m| m.latitude.is_some_and(|l| l < 0.0)));
    assert!(all.iter().any(|m| m.longitude.is_some_and(|l| l < 0.0)));
    assert!(all.iter().any(|m| m.offset_minutes.is_some_and(|o| o < 0)));
    assert!(all.iter().any(|m| *m
        == PhotoMetadata {
            width: m.width,
            height: m.height,
            ..PhotoMetadata::default()
        }));
    for container in ["png_exif.png", "webp_exif.webp"] {
        let m = read_metadata(&std::fs::read(photos().join(container)).unwrap());
        assert!(
            m.taken.is_some() && m.latitude.is_some(),
            "{container}: {m:?}"
        );
    }
}

/// Every fixture with bytes overwritten or cut short, thousands of times, mostly inside the
/// EXIF block at the front of the file: the reader returns something (often less) and never
/// panics, and what it returns stays in range.
#[test]
fn mutated_and_truncated_exif_never_panics() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut still_dated = 0;
    let mut tried = 0;
    for name in reference().keys() {
        let original = std::fs::read(photos().join(name)).unwrap();
        // The EXIF block sits in the first few hundred bytes of every fixture.
        let front = original.len().min(1024);
        for round in 0..600 {
            let mut bytes = original.clone();
            if round % 4 == 0 {
                bytes.truncate((next() as usize) % front);
            } else {
                for _ in 0..1 + next() % 6 {
                    let at = (next() as usize) % front;
                    bytes[at] = match next() % 3 {
                        0 => 0,
                        1 => 0xFF,
                        _ => next() as u8,
                    };
                }
            }
            let m = read_metadata(&bytes);
            tried += 1;
            still_dated += usize::from(m.taken.is_some());
            assert!(
                m.latitude.is_none_or(|l| (-90.0..=90.0).contains(&l)),
                "{m:?}"
            );
            assert!(
                m.longitude.is_none_or(|l| (-180.0..=180.0).contains(&l)),
                "{m:?}"
            );
            assert_eq!(m.latitude.is_some(), m.longitude.is_some(), "{m:?}");
        }
    }
    // Most mutations miss the date: the loop really exercised the parser on damaged blocks
    // that still parse, not only on files it gave up on at once.
    assert!(
        still_dated > tried / 4,
        "{still_dated} of {tried} still dated"
    );
}
