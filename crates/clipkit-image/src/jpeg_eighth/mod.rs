//! Baseline JPEGs at 1/8 scale, with libjpeg-turbo's pixels but not its entropy decoder.
//!
//! At 1/8 scale a luma block becomes one pixel, its DC coefficient over 8, yet libjpeg-turbo
//! spends ~70% of a 12-megapixel decode in its general Huffman decoder, decoding every AC
//! coefficient it then ignores. This decoder skips the AC coefficients of luma blocks,
//! several symbols per table lookup ([`huffman::Skipper`]), starts each block with one lookup
//! for its DC and what follows ([`huffman::BlockStart`]), and decodes in full only the chroma
//! blocks of 4:2:0, whose 2 × 2 reduced IDCT needs them (and only the 25 coefficients it
//! reads are kept): 1.6–1.8× libjpeg-turbo's speed on 12 MP photos
//! (`examples/decode_bench.rs`). Where the time goes is branches more than lookups: a
//! mispredicted one costs as much as a dozen table loads, so the bit reader refills without a
//! test in the loops and libjpeg's range limit is its table, not a `match`.
//!
//! What it produces is libjpeg-turbo's own 1/8-scale output, byte for byte: the same 1 × 1 and
//! 2 × 2 reduced IDCTs (jidctred.c's integer arithmetic), the same choice of IDCT size per
//! component (chroma scaled up by the IDCT rather than upsampled), the same YCbCr → RGB
//! fixed-point constants; the tests hold it to libjpeg-turbo on many files. It takes only the
//! common case (8-bit baseline or extended Huffman, one interleaved scan, greyscale, 4:2:0,
//! 4:2:2 or 4:4:4) and answers `None` for anything else, or anything unusual in the data (a
//! bad code, a block that runs past 64 coefficients, a missing restart marker, a scan that
//! ends early): the caller then decodes with libjpeg-turbo, which reports or mends it as PIL
//! would.

mod huffman;

use huffman::{Bits, BlockStart, Skipper, Table, PADDING};

/// A decoded image at 1/8 scale: `ceil(w / 8) × ceil(h / 8)`, RGB or grey.
pub struct Eighth {
    pub width: usize,
    pub height: usize,
    /// 3 (RGB) or 1 (grey).
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// Decodes `bytes` at 1/8 scale, or `None` where libjpeg-turbo should (see the module doc).
/// The caller has already checked the frame size against its pixel limit.
pub fn decode(bytes: &[u8]) -> Option<Eighth> {
    let mut headers = Headers::default();
    let mut i = 2;
    loop {
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        i += 1;
        while *bytes.get(i)? == 0xFF {
            i += 1;
        }
        let marker = bytes[i];
        i += 1;
        if matches!(marker, 0x01 | 0xD0..=0xD9) {
            return None; // no length field, or out of place before the scan
        }
        let len = usize::from(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]));
        let body = bytes.get(i + 2..(i + len).max(i + 2))?;
        i += len.max(2);
        match marker {
            0xC0 | 0xC1 => {
                if headers.frame.is_some() {
                    return None;
                }
                headers.frame = Some(Frame::parse(body)?);
            }
            0xC4 => headers.parse_huffman(body)?,
            0xDB => headers.parse_quant(body)?,
            0xDD => headers.restart_interval = usize::from(read_u16(body, 0)?),
            0xDA => return decode_scan(&headers, body, bytes.get(i..)?),
            // Progressive, lossless, hierarchical or arithmetic-coded.
            0xC2..=0xCF => return None,
            _ => {} // APPn, COM and the like
        }
    }
}

/// Where a coefficient in zig-zag order sits in the 8 × 8 block (row-major).
const NATURAL: [usize; 64] = natural_order();

const fn natural_order() -> [usize; 64] {
    let mut out = [0; 64];
    let mut k = 0;
    let mut diagonal: usize = 0;
    while diagonal < 15 {
        let low = diagonal.saturating_sub(7);
        let high = if diagonal < 7 { diagonal } else { 7 };
        let mut step = 0;
        while step <= high - low {
            // Even diagonals run bottom-left to top-right, odd ones the other way.
            let row = if diagonal.is_multiple_of(2) {
                high - step
            } else {
                low + step
            };
            out[k] = row * 8 + (diagonal - row);
            k += 1;
            step += 1;
        }
        diagonal += 1;
    }
    out
}

fn read_u16(body: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]))
}

struct Component {
    id: u8,
    h: u8,
    v: u8,
    quant: usize,
}

struct Frame {
    width: usize,
    height: usize,
    components: Vec<Component>,
}

impl Frame {
    fn parse(body: &[u8]) -> Option<Frame> {
        if *body.first()? != 8 {
            return None; // 12-bit samples
        }
        let height = usize::from(read_u16(body, 1)?);
        let width = usize::from(read_u16(body, 3)?);
        let n = usize::from(*body.get(5)?);
        if width == 0 || height == 0 || !(n == 1 || n == 3) || body.len() != 6 + 3 * n {
            return None;
        }
        let components = body[6..]
            .chunks_exact(3)
            .map(|c| Component {
                id: c[0],
                h: c[1] >> 4,
                v: c[1] & 15,
                quant: usize::from(c[2]),
            })
            .collect::<Vec<_>>();
        components
            .iter()
            .all(|c| (1..=4).contains(&c.h) && (1..=4).contains(&c.v) && c.quant < 4)
            .then_some(Frame {
                width,
                height,
                components,
            })
    }

    /// The component sampling this decoder takes.
    fn layout(&self) -> Option<Layout> {
        let sampling: Vec<(u8, u8)> = self.components.iter().map(|c| (c.h, c.v)).collect();
        match sampling.as_slice() {
            [_] => Some(Layout::Gray),
            [(1, 1), (1, 1), (1, 1)] => Some(Layout::Ycc444),
            [(2, 2), (1, 1), (1, 1)] => Some(Layout::Ycc420),
            [(2, 1), (1, 1), (1, 1)] => Some(Layout::Ycc422),
            _ => None,
        }
    }
}

/// At 1/8 scale libjpeg gives luma a 1 × 1 IDCT; chroma subsampled 2 × 2 gets a 2 × 2 IDCT,
/// which lands it at the luma size without an upsampler (jdmaster.c's choice of
/// `DCT_scaled_size` scales chroma up only by factors that fit both directions); chroma
/// subsampled 2 × 1 gets 1 × 1 and is then widened by repeating each pixel (libjpeg's
/// "fancy" upsampling is off when the smallest IDCT is 1 × 1); unsubsampled chroma gets 1 × 1
/// like luma.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Gray,
    Ycc444,
    Ycc420,
    Ycc422,
}

#[derive(Default)]
struct Headers {
    frame: Option<Frame>,
    /// Quantisation tables in natural (row-major) order.
    quant: [Option<[i32; 64]>; 4],
    dc: [Option<Table>; 4],
    ac: [Option<Table>; 4],
    /// MCUs per restart interval; 0 for none.
    restart_interval: usize,
}

impl Headers {
    fn parse_huffman(&mut self, mut body: &[u8]) -> Option<()> {
        while !body.is_empty() {
            let (class, slot) = (body[0] >> 4, usize::from(body[0] & 15));
            let counts: &[u8; 16] = body.get(1..17)?.try_into().ok()?;
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let symbols = body.get(17..17 + total)?;
            if slot > 3 || class > 1 || (class == 0 && symbols.iter().any(|&s| s > 11)) {
                return None; // DC sizes over 11 cannot occur with 8-bit samples
            }
            let table = Some(Table::new(counts, symbols)?);
            if class == 0 {
                self.dc[slot] = table;
            } else {
                self.ac[slot] = table;
            }
            body = &body[17 + total..];
        }
        Some(())
    }

    fn parse_quant(&mut self, mut body: &[u8]) -> Option<()> {
        while !body.is_empty() {
            let (precision, slot) = (body[0] >> 4, usize::from(body[0] & 15));
            let size = if precision == 0 { 1 } else { 2 };
            let values = body.get(1..1 + 64 * size)?;
            if slot > 3 || precision > 1 {
                return None;
            }
            let mut table = [0i32; 64];
            for (k, &n) in NATURAL.iter().enumerate() {
                table[n] = if size == 1 {
                    i32::from(values[k])
                } else {
                    i32::from(u16::from_be_bytes([values[2 * k], values[2 * k + 1]]))
                };
            }
            if table.iter().any(|&q| q > i32::from(i16::MAX)) {
                return None; // libjpeg keeps multipliers in 16 bits
            }
            self.quant[slot] = Some(table);
            body = &body[1 + 64 * size..];
        }
        Some(())
    }
}

/// One component of the scan, with its tables resolved.
struct ScanComponent<'a> {
    quant: &'a [i32; 64],
    /// `quant` for the 2 × 2 IDCT ([`quant_2x2`]).
    quant_2x2: [i32; 25],
    dc: &'a Table,
    ac: &'a Table,
    /// For components whose AC coefficients are skipped.
    skip: Option<Skipper>,
    start: BlockStart,
}

/// The entropy-coded data with `FF 00` stuffing removed, and where each restart marker was.
struct Unstuffed {
    data: Vec<u8>,
    len: usize,
    /// `(offset in data, marker number 0..=7)` of each RSTn.
    restarts: Vec<(usize, u8)>,
}

/// Copies the scan up to the marker that ends it; `None` unless that marker is EOI.
fn unstuff(scan: &[u8]) -> Option<Unstuffed> {
    let mut data = Vec::with_capacity(scan.len() + PADDING);
    let mut restarts = Vec::new();
    let mut i = 0;
    loop {
        let k = memchr::memchr(0xFF, &scan[i..])?;
        data.extend_from_slice(&scan[i..i + k]);
        i += k + 1;
        while *scan.get(i)? == 0xFF {
            i += 1; // fill bytes before a marker
        }
        match scan[i] {
            0x00 => data.push(0xFF),
            m @ 0xD0..=0xD7 => restarts.push((data.len(), m & 7)),
            0xD9 => break,
            _ => return None,
        }
        i += 1;
    }
    let len = data.len();
    data.resize(len + PADDING, 0);
    Some(Unstuffed {
        data,
        len,
        restarts,
    })
}

fn decode_scan(headers: &Headers, sos: &[u8], scan: &[u8]) -> Option<Eighth> {
    let frame = headers.frame.as_ref()?;
    let layout = frame.layout()?;
    let n = usize::from(*sos.first()?);
    if n != frame.components.len() || sos.len() != 1 + 2 * n + 3 {
        return None; // not one scan holding every component
    }
    if sos[1 + 2 * n..] != [0, 63, 0] {
        return None; // spectral selection or approximation of a progressive scan
    }
    let mut components = Vec::with_capacity(n);
    for (i, (c, sel)) in frame
        .components
        .iter()
        .zip(sos[1..1 + 2 * n].chunks_exact(2))
        .enumerate()
    {
        if sel[0] != c.id {
            return None; // components in another order than the frame's
        }
        let ac = headers.ac.get(usize::from(sel[1] & 15))?.as_ref()?;
        let skipped = i == 0 || layout != Layout::Ycc420;
        let dc = headers.dc.get(usize::from(sel[1] >> 4))?.as_ref()?;
        let quant = headers.quant[c.quant].as_ref()?;
        components.push(ScanComponent {
            quant,
            quant_2x2: quant_2x2(quant),
            dc,
            ac,
            skip: skipped.then(|| Skipper::new(ac)),
            start: BlockStart::new(dc, ac, skipped),
        });
    }
    let stream = unstuff(scan)?;

    let (width, height) = (frame.width.div_ceil(8), frame.height.div_ceil(8));
    // The output pixels an MCU covers across and down, and MCUs across and down.
    let (mcu_w, mcu_h, channels) = match layout {
        Layout::Gray => (1, 1, 1),
        Layout::Ycc444 => (1, 1, 3),
        Layout::Ycc420 => (2, 2, 3),
        Layout::Ycc422 => (2, 1, 3),
    };
    let (mcus_x, mcus_y) = (width.div_ceil(mcu_w), height.div_ceil(mcu_h));
    let stride = mcus_x * mcu_w;
    let mut planes = vec![vec![0u8; stride * mcus_y * mcu_h]; channels];

    let mut bits = Bits::new(&stream.data, 0);
    let mut predictors = [0i32; 3];
    let mut restarts = stream.restarts.iter();
    let interval = headers.restart_interval;
    let (mut mx, mut my) = (0, 0);
    for mcu in 0..mcus_x * mcus_y {
        if interval > 0 && mcu > 0 && mcu.is_multiple_of(interval) {
            let &(at, number) = restarts.next()?;
            let expected = ((mcu / interval - 1) % 8) as u8;
            if number != expected || bits.consumed() > at * 8 {
                return None;
            }
            bits = Bits::new(&stream.data, at);
            predictors = [0; 3];
        }
        match layout {
            Layout::Gray | Layout::Ycc444 => {
                for (c, comp) in components.iter().enumerate() {
                    let dc = skip_block(&mut bits, comp, &mut predictors[c])?;
                    planes[c][my * stride + mx] = dc_pixel(dc, comp.quant);
                }
            }
            Layout::Ycc422 => {
                let luma = &components[0];
                for b in 0..2 {
                    let dc = skip_block(&mut bits, luma, &mut predictors[0])?;
                    planes[0][my * stride + 2 * mx + b] = dc_pixel(dc, luma.quant);
                }
                for c in 1..3 {
                    let comp = &components[c];
                    let px = dc_pixel(skip_block(&mut bits, comp, &mut predictors[c])?, comp.quant);
                    let at = my * stride + 2 * mx;
                    planes[c][at..at + 2].fill(px); // widened as libjpeg's h2v1_upsample does
                }
            }
            Layout::Ycc420 => {
                let (luma, cb, cr) = (&components[0], &components[1], &components[2]);
                let mut y = [[0u8; 2]; 2];
                for px in y.as_flattened_mut() {
                    *px = dc_pixel(skip_block(&mut bits, luma, &mut predictors[0])?, luma.quant);
                }
                let cb = chroma_block(&mut bits, cb, &mut predictors[1])?;
                let cr = chroma_block(&mut bits, cr, &mut predictors[2])?;
                let at = 2 * my * stride + 2 * mx;
                for (plane, rows) in planes.iter_mut().zip([y, cb, cr]) {
                    let (top, bottom) = plane[at..].split_at_mut(stride);
                    top[..2].copy_from_slice(&rows[0]);
                    bottom[..2].copy_from_slice(&rows[1]);
                }
            }
        }
        mx += 1;
        if mx == mcus_x {
            (mx, my) = (0, my + 1);
        }
    }
    // Every restart marker used, and no bits read past the end of the data: otherwise
    // libjpeg would have warned and filled in zeros.
    if restarts.next().is_some() || bits.consumed() > stream.len * 8 {
        return None;
    }

    let mut pixels = vec![0u8; width * height * channels];
    for (y, out) in pixels.chunks_exact_mut(width * channels).enumerate() {
        let row = y * stride..y * stride + width;
        if channels == 1 {
            out.copy_from_slice(&planes[0][row]);
            continue;
        }
        let (ys, cbs, crs) = (
            &planes[0][row.clone()],
            &planes[1][row.clone()],
            &planes[2][row],
        );
        for (((px, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(ys).zip(cbs).zip(crs) {
            px.copy_from_slice(&ycc_to_rgb(y, cb, cr));
        }
    }
    Some(Eighth {
        width,
        height,
        channels,
        pixels,
    })
}

/// The DC difference into the component's predictor, checked to fit libjpeg's 16-bit
/// coefficients (it would wrap; a real encoder never gets there).
#[inline(always)]
fn add_dc(predictor: &mut i32, diff: i32) -> Option<i32> {
    *predictor += diff;
    i16::try_from(*predictor).ok().map(i32::from)
}

/// A block's DC, from its [`BlockStart`] entry where the window holds it: the DC, and the
/// zig-zag index the block goes on from, or `None` when it ended there.
#[inline(always)]
fn start_block(
    b: &mut Bits,
    comp: &ScanComponent,
    predictor: &mut i32,
) -> Option<(i32, Option<u32>)> {
    b.refill_always();
    let start = comp.start.entry(b);
    if !start.usable() {
        return Some((add_dc(predictor, comp.dc.decode_dc(b)?)?, Some(1)));
    }
    let run = start.run();
    b.consume(run.len());
    let dc = add_dc(predictor, start.dc())?;
    Some((dc, (!run.ends()).then(|| 1 + run.step())))
}

/// A block whose AC coefficients the 1 × 1 IDCT ignores: decode the DC, skip the rest.
///
/// The reader is copied into a local so its state stays in registers through the loop.
#[inline(always)]
fn skip_block(bits: &mut Bits, comp: &ScanComponent, predictor: &mut i32) -> Option<i32> {
    let mut b = *bits;
    let (dc, k) = start_block(&mut b, comp, predictor)?;
    let Some(mut k) = k else {
        *bits = b;
        return Some(dc);
    };
    let skipper = comp.skip.as_ref()?;
    loop {
        // A refill leaves at least 56 bits and a run takes at most SKIP_BITS (12) of them:
        // four runs fit before the next refill.
        b.refill_always();
        let mut runs = 0;
        while runs < 4 {
            let run = skipper.entry(&b);
            // Several symbols at a time, unless they could reach the end of the block (where
            // the bits after it belong to the next block); an unusable entry's step is 63.
            if k + run.step() >= 64 {
                break;
            }
            b.consume(run.len());
            k += run.step();
            if run.ends() {
                *bits = b;
                return Some(dc);
            }
            runs += 1;
        }
        if runs == 4 {
            continue;
        }
        let (step, _) = comp.ac.decode_ac(&mut b)?;
        k += step;
        if step == 0 || k >= 64 {
            break;
        }
    }
    *bits = b;
    (k <= 64).then_some(dc)
}

/// A chroma block of 4:2:0 through the 2 × 2 reduced IDCT, which needs its AC coefficients.
#[inline(always)]
fn chroma_block(
    bits: &mut Bits,
    comp: &ScanComponent,
    predictor: &mut i32,
) -> Option<[[u8; 2]; 2]> {
    let mut b = *bits;
    let (dc, k) = start_block(&mut b, comp, predictor)?;
    let Some(mut k) = k else {
        *bits = b;
        return Some([[dc_pixel(dc, comp.quant); 2]; 2]);
    };
    // Only the coefficients the 2 × 2 IDCT reads are kept, in a small array with no need
    // of clearing 64 entries per block; the rest go to a sink slot.
    let mut coef = [0i32; 32];
    coef[0] = dc;
    let mut set = 0u32;
    while k < 64 {
        let (step, value) = comp.ac.decode_ac(&mut b)?;
        if step == 0 {
            break;
        }
        k += step;
        if k > 64 {
            return None;
        }
        // The coefficient ends the run (a ZRL writes its zero there, harmlessly).
        let slot = usize::from(SLOT_2X2[k as usize - 1]) & 31;
        coef[slot] = value;
        set |= 1 << slot;
    }
    *bits = b;
    let set = set & !(1 << SINK_2X2);
    Some(if set == 0 {
        [[dc_pixel(dc, comp.quant); 2]; 2] // DC only, as most chroma blocks are
    } else {
        idct_2x2(&coef, &comp.quant_2x2, set)
    })
}

/// The rows (and the columns) of a block that the 2 × 2 IDCT reads: along each axis the even
/// frequencies but DC cancel over a half-block.
const LINES_2X2: [usize; 5] = [0, 1, 3, 5, 7];

/// The slot of the coefficients the IDCT ignores.
const SINK_2X2: usize = 25;

/// Per zig-zag index, the coefficient's slot among the 25 the 2 × 2 IDCT reads (row line × 5
/// + column line, lines as in [`LINES_2X2`]), or [`SINK_2X2`].
const SLOT_2X2: [u8; 64] = {
    let mut out = [SINK_2X2 as u8; 64];
    let mut k = 0;
    while k < 64 {
        let (row, col) = (NATURAL[k] / 8, NATURAL[k] % 8);
        let (mut r, mut c) = (5, 5);
        let mut i = 0;
        while i < 5 {
            if LINES_2X2[i] == row {
                r = i;
            }
            if LINES_2X2[i] == col {
                c = i;
            }
            i += 1;
        }
        if r < 5 && c < 5 {
            out[k] = (r * 5 + c) as u8;
        }
        k += 1;
    }
    out
};

/// The slots of rows and columns 0 and 1 (DC and the three lowest AC coefficients).
const LOWEST_2X2: u32 = 1 | 1 << 1 | 1 << 5 | 1 << 6;

/// A quantisation table's multipliers for the 25 slots of [`SLOT_2X2`].
fn quant_2x2(quant: &[i32; 64]) -> [i32; 25] {
    std::array::from_fn(|slot| quant[LINES_2X2[slot / 5] * 8 + LINES_2X2[slot % 5]])
}

/// libjpeg's range limit after an IDCT: `x + 128` clamped to a byte, with values far out of
/// range wrapping the way its 1024-entry table (indexed by `x & 1023`) does.
fn idct_limit(x: i32) -> u8 {
    RANGE_LIMIT[(x & 1023) as usize]
}

/// [`idct_limit`] as libjpeg has it, a table: no branches to mispredict.
static RANGE_LIMIT: [u8; 1024] = {
    let mut t = [0u8; 1024];
    let mut i = 0;
    while i < 1024 {
        t[i] = match i {
            0..=127 => (i + 128) as u8,
            128..=511 => 255,
            512..=895 => 0,
            _ => (i - 896) as u8,
        };
        i += 1;
    }
    t
};

/// `(x + 2^(n-1)) >> n`, libjpeg's DESCALE.
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// The 1 × 1 reduced IDCT: the block's mean, its dequantised DC over 8.
fn dc_pixel(dc: i32, quant: &[i32; 64]) -> u8 {
    idct_limit(descale(i64::from(dc * quant[0]), 3) as i32)
}

/// The 2 × 2 reduced IDCT (jidctred.c's `jpeg_idct_2x2`) on the coefficients of
/// [`SLOT_2X2`], `set` marking those present: each output is the mean of a 4 × 4 quarter of
/// the block. Only DC and the odd rows/columns 1, 3, 5, 7 enter, weighted by
/// √2 · Σ cos((2x + 1)kπ/16) over x = 0..3, in 13-bit fixed point with 2 extra bits
/// carried between the passes.
#[inline(always)]
fn idct_2x2(coef: &[i32; 32], quant: &[i32; 25], set: u32) -> [[u8; 2]; 2] {
    // 16-bit coefficients times 15-bit multipliers: the products fit an i32.
    let deq = |slot: usize| i64::from(coef[slot] * quant[slot]);
    // Most chroma blocks that have any AC only have the lowest ones: the same arithmetic
    // with the zero terms left out (and no test per column).
    if set & !LOWEST_2X2 == 0 {
        let column = |c: usize| {
            let (even, odd) = (deq(c) << 15, deq(5 + c) * 29692);
            (descale(even + odd, 13), descale(even - odd, 13))
        };
        let ((a0, b0), (a1, b1)) = (column(0), column(1));
        return [idct_2x2_row(a0, a1, 0, 0, 0), idct_2x2_row(b0, b1, 0, 0, 0)];
    }
    let column = |c: usize| {
        const ODD_ROWS_OF_COLUMN_0: u32 = 1 << 5 | 1 << 10 | 1 << 15 | 1 << 20;
        // A column with no odd rows set is its dequantised DC times 4, which is what the
        // full formula gives too.
        if set >> c & ODD_ROWS_OF_COLUMN_0 == 0 {
            let v = deq(c) << 2;
            return (v, v);
        }
        let even = deq(c) << 15;
        let odd = idct_2x2_odd(deq(5 + c), deq(10 + c), deq(15 + c), deq(20 + c));
        (descale(even + odd, 13), descale(even - odd, 13))
    };
    let (a0, b0) = column(0);
    let (a1, b1) = column(1);
    let (a3, b3) = column(2);
    let (a5, b5) = column(3);
    let (a7, b7) = column(4);
    [
        idct_2x2_row(a0, a1, a3, a5, a7),
        idct_2x2_row(b0, b1, b3, b5, b7),
    ]
}

#[inline(always)]
fn idct_2x2_odd(f1: i64, f3: i64, f5: i64, f7: i64) -> i64 {
    f1 * 29692 - f3 * 10426 + f5 * 6967 - f7 * 5906
}

/// Pass 2 on one workspace row: two pixels.
#[inline(always)]
fn idct_2x2_row(w0: i64, w1: i64, w3: i64, w5: i64, w7: i64) -> [u8; 2] {
    let even = w0 << 15;
    let odd = idct_2x2_odd(w1, w3, w5, w7);
    [
        idct_limit(descale(even + odd, 20) as i32),
        idct_limit(descale(even - odd, 20) as i32),
    ]
}

/// libjpeg's YCbCr → RGB (jdcolor.c): 16-bit fixed-point factors, rounded once per term.
fn ycc_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    const ONE_HALF: i32 = 1 << 15;
    let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
    let r = y + ((91881 * cr + ONE_HALF) >> 16);
    let g = y + ((-22554 * cb + ONE_HALF - 46802 * cr) >> 16);
    let b = y + ((116130 * cb + ONE_HALF) >> 16);
    [r, g, b].map(|v| v.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests;
