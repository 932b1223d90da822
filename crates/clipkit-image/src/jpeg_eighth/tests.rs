//! The decoder against libjpeg-turbo's own 1/8-scale decode, byte for byte, over sampling
//! layouts, qualities, optimised Huffman tables, restart intervals and odd sizes.

use super::*;
use crate::test_support::libjpeg_eighth;
use turbojpeg::PixelFormat;
use turbojpeg_sys as tj;

#[derive(Clone, Copy, Debug)]
enum Sampling {
    Gray,
    S420,
    S444,
    S422,
    /// 4:4:0 (chroma halved vertically), which the decoder leaves to libjpeg-turbo.
    S440,
}

#[derive(Clone, Copy, Debug)]
struct Encoding {
    sampling: Sampling,
    quality: i32,
    optimize: bool,
    /// MCUs per restart interval (0: none).
    restart: i32,
    progressive: bool,
}

const BASE: Encoding = Encoding {
    sampling: Sampling::S420,
    quality: 90,
    optimize: false,
    restart: 0,
    progressive: false,
};

/// Encodes packed RGB (or grey) pixels with libjpeg-turbo; the safe wrapper has no restart
/// setting, hence the raw API.
fn encode(pixels: &[u8], width: usize, height: usize, e: Encoding) -> Vec<u8> {
    let gray = matches!(e.sampling, Sampling::Gray);
    let samp = match e.sampling {
        Sampling::Gray => tj::TJSAMP_TJSAMP_GRAY,
        Sampling::S420 => tj::TJSAMP_TJSAMP_420,
        Sampling::S444 => tj::TJSAMP_TJSAMP_444,
        Sampling::S422 => tj::TJSAMP_TJSAMP_422,
        Sampling::S440 => tj::TJSAMP_TJSAMP_440,
    };
    let format = if gray {
        tj::TJPF_TJPF_GRAY
    } else {
        tj::TJPF_TJPF_RGB
    };
    // SAFETY: the handle lives for this block only; the source buffer holds width × height
    // pixels of `format`; the output buffer is allocated by TurboJPEG and freed with tj3Free.
    unsafe {
        let handle = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as i32);
        assert!(!handle.is_null());
        for (param, value) in [
            (tj::TJPARAM_TJPARAM_QUALITY, e.quality),
            (tj::TJPARAM_TJPARAM_SUBSAMP, samp),
            (tj::TJPARAM_TJPARAM_OPTIMIZE, i32::from(e.optimize)),
            (tj::TJPARAM_TJPARAM_PROGRESSIVE, i32::from(e.progressive)),
            (tj::TJPARAM_TJPARAM_RESTARTBLOCKS, e.restart),
        ] {
            assert_eq!(tj::tj3Set(handle, param as i32, value), 0);
        }
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut size = 0;
        let rc = tj::tj3Compress8(
            handle,
            pixels.as_ptr(),
            width as i32,
            0,
            height as i32,
            format,
            &mut out,
            &mut size,
        );
        assert_eq!(rc, 0, "tj3Compress8 failed");
        let jpeg = std::slice::from_raw_parts(out, size as usize).to_vec();
        tj::tj3Free(out.cast());
        tj::tj3Destroy(handle);
        jpeg
    }
}

/// Photo-like test content: smooth gradients, hard edges and noise, so blocks range from
/// DC-only to dense.
fn synthetic(width: usize, height: usize, channels: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 41) as i32 - 20
    };
    let mut out = Vec::with_capacity(width * height * channels);
    for y in 0..height {
        for x in 0..width {
            for c in 0..channels {
                let gradient = (x * (c + 1) * 255 / width + y * 255 / height) as i32 / 2;
                let edge = if (x / 37 + y / 23) % 3 == 0 { 90 } else { 0 };
                out.push((gradient + edge + noise()).clamp(0, 255) as u8);
            }
        }
    }
    out
}

fn fixture_rgb(name: &str) -> (usize, usize, Vec<u8>) {
    let path = format!(
        "{}/../../fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let img = image::open(&path).expect("fixture").to_rgb8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

fn assert_matches_libjpeg(jpeg: &[u8], what: &str) {
    let ours = decode(jpeg).unwrap_or_else(|| panic!("{what}: fast path declined"));
    let format = if ours.channels == 1 {
        PixelFormat::GRAY
    } else {
        PixelFormat::RGB
    };
    let (w, h, reference) = libjpeg_eighth(jpeg, format);
    assert_eq!((ours.width, ours.height), (w, h), "{what}: size");
    if ours.pixels != reference {
        let diffs = ours
            .pixels
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a != b)
            .count();
        let first = ours.pixels.iter().zip(&reference).position(|(a, b)| a != b);
        panic!(
            "{what}: {diffs} of {} bytes differ from libjpeg-turbo, first at byte {first:?}",
            reference.len()
        );
    }
}

#[test]
fn natural_order_is_the_zig_zag_permutation() {
    assert_eq!(&NATURAL[..10], &[0, 1, 8, 16, 9, 2, 3, 10, 17, 24]);
    assert_eq!(&NATURAL[60..], &[47, 55, 62, 63]);
    let mut seen = NATURAL.to_vec();
    seen.sort_unstable();
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
}

#[test]
fn matches_libjpeg_turbo_on_photos_in_every_taken_layout() {
    for name in ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"] {
        let (w, h, rgb) = fixture_rgb(name);
        for sampling in [Sampling::S420, Sampling::S422, Sampling::S444] {
            for quality in [50, 90, 100] {
                let e = Encoding {
                    sampling,
                    quality,
                    ..BASE
                };
                assert_matches_libjpeg(&encode(&rgb, w, h, e), &format!("{name} {e:?}"));
            }
        }
        let gray: Vec<u8> = rgb.chunks_exact(3).map(|p| p[1]).collect();
        let e = Encoding {
            sampling: Sampling::Gray,
            ..BASE
        };
        assert_matches_libjpeg(&encode(&gray, w, h, e), &format!("{name} {e:?}"));
    }
}

#[test]
fn matches_libjpeg_turbo_on_odd_sizes_optimised_tables_and_restarts() {
    let sizes = [
        (1, 1),
        (7, 9),
        (17, 15),
        (203, 157),
        (640, 480),
        (1001, 757),
    ];
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let rgb = synthetic(w, h, 3, i as u64 + 7);
        let gray = synthetic(w, h, 1, i as u64 + 99);
        for sampling in [
            Sampling::S420,
            Sampling::S422,
            Sampling::S444,
            Sampling::Gray,
        ] {
            for (optimize, restart, quality) in
                [(false, 0, 85), (true, 0, 97), (false, 3, 75), (true, 1, 95)]
            {
                let e = Encoding {
                    sampling,
                    quality,
                    optimize,
                    restart,
                    progressive: false,
                };
                let src = if matches!(sampling, Sampling::Gray) {
                    &gray
                } else {
                    &rgb
                };
                assert_matches_libjpeg(&encode(src, w, h, e), &format!("{w}x{h} {e:?}"));
            }
        }
    }
}

#[test]
fn declines_what_it_does_not_take() {
    let (w, h) = (96, 64);
    let rgb = synthetic(w, h, 3, 5);
    for e in [
        Encoding {
            progressive: true,
            ..BASE
        },
        Encoding {
            sampling: Sampling::S440,
            ..BASE
        },
    ] {
        assert!(decode(&encode(&rgb, w, h, e)).is_none(), "{e:?}");
    }
    let jpeg = encode(&rgb, w, h, BASE);
    assert!(decode(&jpeg).is_some());
    // Cut short: the scan never reaches EOI.
    assert!(decode(&jpeg[..jpeg.len() / 2]).is_none());
    // The EOI moved up over the last bytes of the scan: the decode runs out of bits.
    let mut short = jpeg[..jpeg.len() - 40].to_vec();
    short.extend_from_slice(&[0xFF, 0xD9]);
    assert!(decode(&short).is_none());
    // A marker where the scan's data should be.
    let mut bad = jpeg.clone();
    let mid = bad.len() - 100;
    bad[mid] = 0xFF;
    bad[mid + 1] = 0xC4;
    assert!(decode(&bad).is_none());
    assert!(decode(b"\xFF\xD8").is_none());
    assert!(decode(b"\xFF\xD8\xFF\xC0\x00").is_none());
}

#[test]
fn declines_a_restart_marker_out_of_sequence() {
    let (w, h) = (128, 64);
    let rgb = synthetic(w, h, 3, 11);
    let mut jpeg = encode(&rgb, w, h, Encoding { restart: 2, ..BASE });
    assert!(decode(&jpeg).is_some());
    let sos = jpeg.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
    let rst = sos
        + jpeg[sos..]
            .windows(2)
            .position(|m| m[0] == 0xFF && (0xD0..=0xD7).contains(&m[1]))
            .unwrap();
    jpeg[rst + 1] = 0xD5; // RST5 where RST0 belongs
    assert!(decode(&jpeg).is_none());
}

#[test]
fn reduced_idcts_agree_with_the_mean_of_the_full_block() {
    // A DC-only block: every output is DC/8 + 128.
    let mut coef = [0i32; 32];
    coef[0] = -80;
    let quant = [2i32; 64];
    assert_eq!(dc_pixel(coef[0], &quant), (128 - 20) as u8);
    assert_eq!(
        idct_2x2(&coef, &quant_2x2(&quant), 1),
        [[108, 108], [108, 108]]
    );
    // A horizontal first harmonic (slot 1: row 0, column 1) brightens the left half and
    // darkens the right one.
    coef[1] = 40;
    let px = idct_2x2(&coef, &quant_2x2(&quant), 0b11);
    assert!(px[0][0] > 108 && px[0][1] < 108 && px[0] == px[1], "{px:?}");
    assert_eq!(idct_limit(200), 255);
    assert_eq!(idct_limit(-200), 0);
    assert_eq!(idct_limit(-1), 127);
}

/// jidctred.c's `jpeg_idct_2x2` written out over a whole natural-order block: every
/// coefficient, no shortcut, no compact slots.
fn idct_2x2_reference(block: &[i32; 64], quant: &[i32; 64]) -> [[u8; 2]; 2] {
    let deq = |i: usize| i64::from(block[i] * quant[i]);
    let odd = |f: [i64; 4]| f[0] * 29692 - f[1] * 10426 + f[2] * 6967 - f[3] * 5906;
    let mut workspace = [[0i64; 8]; 2];
    for col in [0, 1, 3, 5, 7] {
        let even = deq(col) << 15;
        let o = odd([8, 24, 40, 56].map(|row| deq(row + col)));
        workspace[0][col] = descale(even + o, 13);
        workspace[1][col] = descale(even - o, 13);
    }
    workspace.map(|w| {
        let even = w[0] << 15;
        let o = odd([w[1], w[3], w[5], w[7]]);
        [
            idct_limit(descale(even + o, 20) as i32),
            idct_limit(descale(even - o, 20) as i32),
        ]
    })
}

/// The decoder's IDCT (compact slots, shortcuts for zero columns and for the lowest
/// coefficients only) against the plain one, on random sparse blocks like chroma's.
#[test]
fn the_compact_idct_with_its_shortcuts_matches_the_plain_one() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let quant: [i32; 64] = std::array::from_fn(|i| 1 + (i as i32 * 7) % 50);
    let (mut lowest_only, mut general) = (0, 0);
    for round in 0..4000 {
        let mut block = [0i32; 64];
        // Half the blocks with coefficients anywhere, half only in the lowest four.
        let reach = if round % 2 == 0 { 64 } else { 10 };
        for _ in 0..(next() % 6) {
            let at = (next() % reach) as usize;
            block[at] = (next() % 400) as i32 - 200;
        }
        block[0] = (next() % 2000) as i32 - 1000;
        // As the decoder stores them: per zig-zag index into its slot.
        let (mut coef, mut set) = ([0i32; 32], 0u32);
        for (k, &slot) in SLOT_2X2.iter().enumerate() {
            let value = block[NATURAL[k]];
            if value != 0 {
                coef[usize::from(slot)] = value;
                set |= 1 << slot;
            }
        }
        let set = set & !(1 << SINK_2X2);
        if set & !LOWEST_2X2 == 0 {
            lowest_only += 1;
        } else {
            general += 1;
        }
        assert_eq!(
            idct_2x2(&coef, &quant_2x2(&quant), set | 1),
            idct_2x2_reference(&block, &quant),
            "{block:?}"
        );
    }
    assert!(
        lowest_only > 500 && general > 500,
        "{lowest_only} {general}"
    );
}
