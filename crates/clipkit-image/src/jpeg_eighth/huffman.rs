//! Huffman tables and the bit reader of a baseline JPEG scan.
//!
//! The scan is read from a copy with the `FF 00` stuffing already removed, so the reader can
//! load eight bytes at a time with no per-byte marker test. Each table has a lookup on the
//! next [`LOOKUP_BITS`] bits that, for most symbols, gives the code *and* its extra bits at
//! once: skipping a coefficient (all a 1/8-scale decode needs from most blocks) is then one
//! load and one shift.

/// Bits looked at once; codes plus extra bits longer than this take the slower paths.
pub const LOOKUP_BITS: u32 = 10;

/// One lookup entry, packed in a `u32` so the hot loop needs a single load:
/// bits 0..5 the bits to consume (0 where the code is longer than the lookup), bit 5 set when
/// those include the extra bits, bits 6..11 the AC step ([`ac_step`]), and bits 16..32 the
/// coefficient (DC difference) when complete, else the symbol.
#[derive(Clone, Copy)]
pub struct Entry(pub u32);

impl Entry {
    const COMPLETE: u32 = 1 << 5;

    fn new(len: u32, complete: bool, symbol: u8, value: i32) -> Entry {
        let high = if complete {
            u32::from(value as i16 as u16)
        } else {
            u32::from(symbol)
        };
        let flag = if complete { Entry::COMPLETE } else { 0 };
        Entry(len | flag | u32::from(ac_step(symbol)) << 6 | high << 16)
    }

    #[inline(always)]
    pub fn len(self) -> u32 {
        self.0 & 31
    }

    #[inline(always)]
    pub fn complete(self) -> bool {
        self.0 & Entry::COMPLETE != 0
    }

    #[inline(always)]
    pub fn step(self) -> u32 {
        (self.0 >> 6) & 31
    }

    /// The coefficient of a complete entry.
    #[inline(always)]
    pub fn value(self) -> i32 {
        i32::from((self.0 >> 16) as u16 as i16)
    }

    /// The symbol of an entry that is not complete.
    #[inline(always)]
    pub fn symbol(self) -> u8 {
        (self.0 >> 16) as u8
    }
}

/// A Huffman table in the form the decoder wants it.
pub struct Table {
    lookup: Box<[u32; 1 << LOOKUP_BITS]>,
    /// Canonical decoding for codes over `LOOKUP_BITS` bits (JPEG Annex F.2.2.3): the largest
    /// code of each length (-1 where none) and the offset from a code to its symbol's index.
    max_code: [i32; 17],
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl Table {
    /// From a DHT segment's counts per code length and its symbols; `None` for a table that
    /// is not a valid prefix code.
    pub fn new(counts: &[u8; 16], symbols: &[u8]) -> Option<Table> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != symbols.len() || total > 256 {
            return None;
        }
        let mut table = Table {
            lookup: Box::new([0; 1 << LOOKUP_BITS]),
            max_code: [-1; 17],
            offset: [0; 17],
            symbols: symbols.to_vec(),
        };
        let mut code: u32 = 0;
        let mut index = 0usize;
        for len in 1..=16u32 {
            let count = u32::from(counts[len as usize - 1]);
            if count > 0 {
                table.offset[len as usize] = index as i32 - code as i32;
                for _ in 0..count {
                    if code >= 1 << len {
                        return None; // more codes of this length than fit
                    }
                    if len <= LOOKUP_BITS {
                        table.fill(code, len, symbols[index]);
                    }
                    code += 1;
                    index += 1;
                }
                table.max_code[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        Some(table)
    }

    /// Every lookup index that starts with `code` decodes to `symbol`; where the index also
    /// holds the extra bits, the entry carries the coefficient.
    fn fill(&mut self, code: u32, len: u32, symbol: u8) {
        let spare = LOOKUP_BITS - len;
        let extra = u32::from(symbol & 15);
        for tail in 0..1u32 << spare {
            let entry = if extra <= spare {
                let bits = (tail >> (spare - extra)) & ((1 << extra) - 1);
                Entry::new(len + extra, true, symbol, extend(bits, extra))
            } else {
                Entry::new(len, false, symbol, 0)
            };
            self.lookup[((code << spare) | tail) as usize] = entry.0;
        }
    }

    #[inline(always)]
    fn entry(&self, bits: &Bits) -> Entry {
        Entry(self.lookup[bits.peek(LOOKUP_BITS) as usize])
    }

    /// A code too long for the lookup, from the next 16 bits: its symbol and length, or `None`
    /// for bits that are no code of this table.
    #[cold]
    pub fn long_code(&self, word: u32) -> Option<(u8, u32)> {
        for len in LOOKUP_BITS + 1..=16 {
            let code = (word >> (16 - len)) as i32;
            if code <= self.max_code[len as usize] {
                let i = (code + self.offset[len as usize]) as usize;
                return self.symbols.get(i).map(|&s| (s, len));
            }
        }
        None
    }

    /// A symbol's entry when the lookup did not complete it: consumes the code and its extra
    /// bits and answers the symbol and coefficient.
    #[inline(always)]
    fn finish(&self, e: Entry, bits: &mut Bits) -> Option<(u8, i32)> {
        let symbol = if e.len() > 0 {
            bits.consume(e.len());
            e.symbol()
        } else {
            let (symbol, len) = self.long_code(bits.peek(16))?;
            bits.consume(len);
            symbol
        };
        let extra = u32::from(symbol & 15);
        bits.refill();
        Some((symbol, extend(bits.take(extra), extra)))
    }

    /// A DC difference, consumed (`None` on a bad code).
    #[inline(always)]
    pub fn decode_dc(&self, bits: &mut Bits) -> Option<i32> {
        Some(self.decode_ac(bits)?.1)
    }

    /// An AC symbol's step ([`ac_step`]) and coefficient, consumed (`None` on a bad code).
    #[inline(always)]
    pub fn decode_ac(&self, bits: &mut Bits) -> Option<(u32, i32)> {
        bits.refill();
        let e = self.entry(bits);
        if e.complete() {
            bits.consume(e.len());
            return Some((e.step(), e.value()));
        }
        let (symbol, value) = self.finish(e, bits)?;
        Some((u32::from(ac_step(symbol)), value))
    }
}

/// Bits looked at by a [`Skipper`].
pub const SKIP_BITS: u32 = 12;

/// Skipping AC coefficients several symbols per lookup, for blocks whose coefficients are not
/// needed: most luma codes with their extra bits take 3 to 6 bits, so the next 12 bits often
/// hold two or three whole symbols, and one lookup does their work on the chain of dependent
/// loads that bounds a Huffman decoder. (Wider lookups measured no faster: they leave L1.)
///
/// Entry: bits 0..5 the bits the symbols take, bits 5..11 their total step, bit 11 set when
/// the block ends with them (an end of block among them); [`Skipper::UNUSABLE`] where the
/// first symbol is not complete within the lookup.
pub struct Skipper {
    lookup: Box<[u16; 1 << SKIP_BITS]>,
}

impl Skipper {
    /// Step 63, more than any block has left after its DC: the caller's test for a run
    /// that stays inside the block turns these entries away with no test of its own.
    const UNUSABLE: u16 = 63 << 5;

    pub fn new(table: &Table) -> Skipper {
        let mut lookup = Box::new([0u16; 1 << SKIP_BITS]);
        for (window, slot) in lookup.iter_mut().enumerate() {
            let run = ac_run(table, window as u32, SKIP_BITS, 63);
            *slot = if run.used > 0 {
                run.packed()
            } else {
                Self::UNUSABLE
            };
        }
        Skipper { lookup }
    }

    #[inline(always)]
    pub fn entry(&self, bits: &Bits) -> Run {
        Run(self.lookup[bits.peek(SKIP_BITS) as usize])
    }
}

/// Whole AC symbols at the top of the `avail` low bits of `window`, up to an end of block and
/// no further along the zig-zag than `max_step`.
struct AcRun {
    used: u32,
    step: u32,
    ends: bool,
}

impl AcRun {
    /// As a [`Run`]: bits 0..5 `used`, bits 5..11 `step`, bit 11 `ends`.
    fn packed(&self) -> u16 {
        self.used as u16 | (self.step as u16) << 5 | if self.ends { Run::ENDS } else { 0 }
    }
}

fn ac_run(table: &Table, window: u32, avail: u32, max_step: u32) -> AcRun {
    // A symbol complete within the `avail` bits at the top of `bits`, as (len, step).
    let symbol_at = |bits: u32, avail: u32| -> Option<(u32, u32)> {
        let index = if avail >= LOOKUP_BITS {
            bits >> (avail - LOOKUP_BITS)
        } else {
            bits << (LOOKUP_BITS - avail)
        } & ((1 << LOOKUP_BITS) - 1);
        let e = Entry(table.lookup[index as usize]);
        (e.complete() && e.len() <= avail).then(|| (e.len(), e.step()))
    };
    let mut run = AcRun {
        used: 0,
        step: 0,
        ends: false,
    };
    while run.used < avail {
        let left = avail - run.used;
        let Some((len, s)) = symbol_at(window & ((1 << left) - 1), left) else {
            break;
        };
        if run.step + s > max_step {
            break;
        }
        run.used += len;
        run.step += s;
        if s == 0 {
            run.ends = true;
            break;
        }
    }
    run
}

/// Bits looked at by a [`BlockStart`].
pub const START_BITS: u32 = 12;

/// The start of a block in one lookup: its DC difference with its extra bits and, behind it,
/// either the AC symbols a [`Skipper`] would skip (for blocks whose AC coefficients are not
/// needed) or only an immediate end of block (for blocks that are decoded in full). Smooth
/// blocks, the most common kind in photos, are then one lookup in all.
///
/// Entry: bits 0..12 a [`Run`] of the bits taken (DC included) and the AC step, bit 12 set
/// when usable (the DC code and its extra bits are within the window), bits 16..32 the DC
/// difference.
pub struct BlockStart {
    lookup: Box<[u32; 1 << START_BITS]>,
}

impl BlockStart {
    const USABLE: u32 = 1 << 12;

    /// `skip_ac`: whether AC symbols may be taken past (else only an end of block is).
    pub fn new(dc: &Table, ac: &Table, skip_ac: bool) -> BlockStart {
        let mut lookup = Box::new([0u32; 1 << START_BITS]);
        for (window, slot) in lookup.iter_mut().enumerate() {
            let window = window as u32;
            let e = Entry(dc.lookup[(window >> (START_BITS - LOOKUP_BITS)) as usize]);
            if !e.complete() {
                continue;
            }
            let avail = START_BITS - e.len();
            // Keep k = 1 + step below 64, so the caller's loop goes on from there.
            // (With a limit of 0 only an end of block can be taken.)
            let mut run = ac_run(ac, window, avail, if skip_ac { 62 } else { 0 });
            run.used += e.len();
            *slot =
                u32::from(run.packed()) | Self::USABLE | u32::from(e.value() as i16 as u16) << 16;
        }
        BlockStart { lookup }
    }

    #[inline(always)]
    pub fn entry(&self, bits: &Bits) -> Start {
        Start(self.lookup[bits.peek(START_BITS) as usize])
    }
}

/// A [`BlockStart`] entry.
#[derive(Clone, Copy)]
pub struct Start(u32);

impl Start {
    #[inline(always)]
    pub fn usable(self) -> bool {
        self.0 & BlockStart::USABLE != 0
    }

    /// The bits taken, the AC step and whether the block ended with them.
    #[inline(always)]
    pub fn run(self) -> Run {
        Run(self.0 as u16 & 0xFFF)
    }

    #[inline(always)]
    pub fn dc(self) -> i32 {
        i32::from((self.0 >> 16) as u16 as i16)
    }
}

/// A [`Skipper`] entry.
#[derive(Clone, Copy)]
pub struct Run(u16);

impl Run {
    const ENDS: u16 = 1 << 11;

    /// Bits the symbols take.
    #[inline(always)]
    pub fn len(self) -> u32 {
        u32::from(self.0 & 31)
    }

    /// Their total step along the zig-zag.
    #[inline(always)]
    pub fn step(self) -> u32 {
        u32::from((self.0 >> 5) & 63)
    }

    /// They end the block.
    #[inline(always)]
    pub fn ends(self) -> bool {
        self.0 & Run::ENDS != 0
    }
}

/// See [`Entry::step`]. Like libjpeg, any zero-size symbol but ZRL (0xF0) ends the block.
pub fn ac_step(symbol: u8) -> u8 {
    let (run, size) = (symbol >> 4, symbol & 15);
    match (run, size) {
        (15, 0) => 16,
        (_, 0) => 0,
        _ => run + 1,
    }
}

/// A coefficient's extra bits to its signed value (JPEG's EXTEND, F.2.2.1).
#[inline(always)]
pub fn extend(bits: u32, size: u32) -> i32 {
    if size == 0 {
        0
    } else if bits < 1 << (size - 1) {
        bits as i32 - (1 << size) + 1
    } else {
        bits as i32
    }
}

/// Most-significant-bit-first reader over unstuffed scan bytes.
///
/// `data` must extend at least 8 bytes past the scan ([`PADDING`]); reading on past the scan
/// yields zero bits, and [`Bits::consumed`] tells the caller whether that happened.
#[derive(Clone, Copy)]
pub struct Bits<'a> {
    data: &'a [u8],
    /// Next byte not yet (fully) in `buf`.
    next: usize,
    /// The next bits of the scan, left-aligned.
    buf: u64,
    /// Valid bits at the top of `buf`.
    count: u32,
}

/// Zero bytes the unstuffed scan needs after it.
pub const PADDING: usize = 16;

impl<'a> Bits<'a> {
    pub fn new(data: &'a [u8], start: usize) -> Bits<'a> {
        Bits {
            data,
            next: start,
            buf: 0,
            count: 0,
        }
    }

    /// Tops the buffer up to at least 56 bits (whole bytes only, so the low bits of `buf`
    /// may already hold the following bits; or-ing them in again is harmless).
    #[inline(always)]
    pub fn refill(&mut self) {
        if self.count >= 32 {
            return;
        }
        let word = match self.data.get(self.next..self.next + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
            None => 0, // far past the scan: the caller refuses the result
        };
        self.buf |= word >> self.count;
        self.next += ((63 - self.count) >> 3) as usize;
        self.count |= 56;
    }

    /// [`Bits::refill`] without the test: no branch to mispredict where the bits left
    /// vary from call to call.
    #[inline(always)]
    pub fn refill_always(&mut self) {
        // Past the end the bits are wrong rather than zero; `consumed` tells the caller.
        let at = self.next.min(self.data.len() - 8);
        let word = u64::from_be_bytes(self.data[at..at + 8].try_into().expect("8 bytes"));
        self.buf |= word >> self.count;
        self.next += ((63 - self.count) >> 3) as usize;
        self.count |= 56;
    }

    /// The next `n` (1..=32) bits, not consumed.
    #[inline(always)]
    pub fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    #[inline(always)]
    pub fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.count -= n;
    }

    /// The next `n` (0..=16) bits, consumed; needs `count >= n` (a refill).
    #[inline(always)]
    pub fn take(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// Bits consumed since byte 0 of `data`.
    pub fn consumed(&self) -> usize {
        self.next * 8 - self.count as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.resize(bytes.len() + PADDING, 0);
        v
    }

    #[test]
    fn extend_maps_extra_bits_to_signed_values() {
        assert_eq!(extend(0, 0), 0);
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0b00, 2), -3);
        assert_eq!(extend(0b01, 2), -2);
        assert_eq!(extend(0b10, 2), 2);
        assert_eq!(extend(0b11, 2), 3);
        assert_eq!(extend(0, 11), -2047);
    }

    #[test]
    fn reads_bits_in_order_across_refills() {
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        let buf = padded(&data);
        let mut bits = Bits::new(&buf, 0);
        let mut out = Vec::new();
        let sizes = [3u32, 7, 1, 16, 5, 9, 12, 2, 16, 11];
        let mut total = 0;
        while total + 16 <= data.len() as u32 * 8 {
            for &n in &sizes {
                if total + n > data.len() as u32 * 8 {
                    break;
                }
                bits.refill();
                out.push((bits.take(n), n));
                total += n;
            }
        }
        assert_eq!(bits.consumed(), total as usize);
        // The same bits, one at a time from the bytes.
        let mut pos = 0usize;
        for (v, n) in out {
            let mut expect = 0u32;
            for _ in 0..n {
                let bit = (data[pos / 8] >> (7 - pos % 8)) & 1;
                expect = (expect << 1) | u32::from(bit);
                pos += 1;
            }
            assert_eq!(v, expect, "at bit {pos}");
        }
    }

    /// Codes of every length 1..=16, a few symbols each, so both the lookup and the long-code
    /// path are used; every symbol must decode back with its extra bits.
    #[test]
    fn decodes_short_and_long_codes_with_their_extra_bits() {
        let mut counts = [0u8; 16];
        counts[1] = 2; // two 2-bit codes
        counts[3] = 3;
        counts[8] = 4;
        counts[11] = 5;
        counts[15] = 1;
        let symbols: Vec<u8> = (0..15u8).map(|i| (i * 17) & 0xFB).collect();
        let table = Table::new(&counts, &symbols).expect("a valid table");
        // Canonical codes, as the DHT defines them.
        let mut codes = Vec::new();
        let (mut code, mut i) = (0u32, 0);
        for len in 1..=16u32 {
            for _ in 0..counts[len as usize - 1] {
                codes.push((code, len, symbols[i]));
                code += 1;
                i += 1;
            }
            code <<= 1;
        }
        // Write each code followed by its extra bits (alternating ones and zeros).
        let pattern = |extra: u32| 0x5555 & ((1u32 << extra) - 1);
        let mut stream: Vec<(u32, u32)> = Vec::new();
        for &(code, len, sym) in &codes {
            stream.push((code, len));
            let extra = u32::from(sym & 15);
            if extra > 0 {
                stream.push((pattern(extra), extra));
            }
        }
        let mut bytes = Vec::new();
        let (mut acc, mut n) = (0u64, 0u32);
        for (v, len) in stream {
            acc = (acc << len) | u64::from(v);
            n += len;
            while n >= 8 {
                bytes.push((acc >> (n - 8)) as u8);
                n -= 8;
            }
        }
        if n > 0 {
            bytes.push(((acc << (8 - n)) as u8) | ((1u8 << (8 - n)) - 1));
        }
        let buf = padded(&bytes);
        let mut bits = Bits::new(&buf, 0);
        for &(_, _, sym) in &codes {
            let (step, value) = table.decode_ac(&mut bits).expect("a code");
            assert_eq!(step, u32::from(ac_step(sym)), "symbol {sym:#x}");
            let extra = u32::from(sym & 15);
            assert_eq!(value, extend(pattern(extra), extra), "symbol {sym:#x}");
        }
    }

    #[test]
    fn refuses_tables_with_too_many_codes() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes cannot exist
        assert!(Table::new(&counts, &[1, 2, 3]).is_none());
        counts[0] = 1;
        assert!(Table::new(&counts, &[1, 2]).is_none()); // count and symbols disagree
    }
}
