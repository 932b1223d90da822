//! Multi-head scaled dot-product attention, read straight from the fused QKV projection.
//!
//! The QKV linear layer writes each token as `[q | k | v]`, every part `heads × head_dim`.
//! Slicing that into per-head Q, K and V tensors costs three permuted copies per layer; here
//! each (batch item, head) task reads its columns in place, transposes only its own K
//! (`head_dim × seq`, a few KiB) so that scores are computed along contiguous memory, and
//! writes its head's columns of the `[batch, seq, hidden]` output. With `causal`, token `i`
//! attends to tokens `0..=i` only (the text tower), so masked scores are never computed.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::act::exp_slice;
use crate::gemm::driver::SharedOut;
use crate::gemm::kernels::tile_f32;
use crate::gemm::tile::{Prefetch, Tile, MR, NR};

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl AttentionShape {
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
}

thread_local! {
    /// Per-thread scratch (K transposed into panels, the score matrix), reused across calls
    /// so that attention allocates nothing in steady state.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `qkv`: `[batch, seq, 3·hidden]` → `out`: `[batch, seq, hidden]`, softmax(q·kᵀ/√d)·v per head.
///
/// Both products run on the GEMM micro-kernel: `q·kᵀ` against K packed into 64-key panels,
/// `p·v` against V read in place (its rows are `head_dim` contiguous floats).
pub fn attention(qkv: &[f32], shape: AttentionShape, out: &mut [f32]) {
    let segments: Vec<(usize, usize)> = (0..shape.batch)
        .map(|b| (b * shape.seq, shape.seq))
        .collect();
    run(qkv, &segments, shape, out);
}

/// Attention over sequences of different lengths packed back to back (`lengths` rows each, no
/// padding): each attends only within itself. `qkv`: `[Σ lengths, 3·hidden]`.
///
/// Why: a batch of prompts padded to its longest one spends the padding's share of every
/// matmul on rows whose results are thrown away; packed, every row is a real token.
pub fn attention_packed(
    qkv: &[f32],
    lengths: &[usize],
    heads: usize,
    head_dim: usize,
    causal: bool,
    out: &mut [f32],
) {
    let mut segments = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &len in lengths {
        segments.push((start, len));
        start += len;
    }
    let shape = AttentionShape {
        batch: 1,
        seq: start,
        heads,
        head_dim,
        causal,
    };
    run(qkv, &segments, shape, out);
}

/// `segments`: (first row, rows) of each sequence; `shape.batch · shape.seq` rows in all.
fn run(qkv: &[f32], segments: &[(usize, usize)], shape: AttentionShape, out: &mut [f32]) {
    let heads = shape.heads;
    let hidden = shape.hidden();
    let rows = shape.batch * shape.seq;
    assert_eq!(qkv.len(), rows * 3 * hidden, "qkv is not [rows, 3·hidden]");
    assert_eq!(out.len(), rows * hidden, "out is not [rows, hidden]");
    assert!(
        segments.iter().all(|&(s, l)| s + l <= rows),
        "sequences overrun the rows"
    );
    let shared = SharedOut::new(out.as_mut_ptr());
    (0..segments.len() * heads).into_par_iter().for_each(|t| {
        let (start, len) = segments[t / heads];
        SCRATCH.with_borrow_mut(|(kt, scores)| {
            // SAFETY: task `t` writes only the columns of head `t % heads` of its own rows,
            // which no other task writes (segments do not overlap).
            unsafe { head(qkv, shape, start, len, t % heads, shared.ptr(), kt, scores) }
        });
    });
}

/// One (sequence, head): rows `start..start + seq`.
///
/// # Safety
/// `out` points at a `[rows, hidden]` buffer; only this head's columns of these rows are
/// written.
#[allow(clippy::too_many_arguments)]
unsafe fn head(
    qkv: &[f32],
    s: AttentionShape,
    start: usize,
    seq: usize,
    h: usize,
    out: *mut f32,
    kt: &mut Vec<f32>,
    scores: &mut Vec<f32>,
) {
    let d = s.head_dim;
    let hidden = s.hidden();
    let row = 3 * hidden;
    let base = &qkv[start * row..][..seq * row];
    let (q_off, k_off, v_off) = (h * d, hidden + h * d, 2 * hidden + h * d);
    let panels = seq.div_ceil(NR);
    let ld = panels * NR;

    // Kᵀ in panels: kt[p][dd][jj] = k[p·NR + jj][dd], zero past the last key.
    kt.clear();
    kt.resize(panels * d * NR, 0.0);
    for j in 0..seq {
        let (p, jj) = (j / NR, j % NR);
        for (dd, &x) in base[j * row + k_off..][..d].iter().enumerate() {
            kt[(p * d + dd) * NR + jj] = x;
        }
    }
    scores.clear();
    scores.resize(seq * ld, 0.0);
    let sp = scores.as_mut_ptr();
    let scale = (d as f32).powf(-0.5);

    let mut i0 = 0;
    while i0 < seq {
        let rows = MR.min(seq - i0);
        let q = &base[i0 * row + q_off..];
        // Keys this row tile can see: all, or up to its last row when causal.
        let visible = if s.causal { i0 + rows } else { seq };
        for p in 0..visible.div_ceil(NR) {
            let t = Tile {
                h: rows,
                a: q,
                lda: row,
                b: &kt[p * d * NR..],
                ldb: NR,
                kc: d,
                c: sp.wrapping_add(i0 * ld + p * NR),
                ldc: ld,
                cols: NR,
                first: true,
                epi: None,
                pf: Prefetch::NONE,
            };
            // SAFETY: `c` is rows `i0..i0 + rows`, columns `p·NR..(p + 1)·NR` of the
            // `seq × ld` score matrix (`ld` is whole panels), which this task owns.
            unsafe { tile_f32(&t) };
        }
        for i in i0..i0 + rows {
            let len = if s.causal { i + 1 } else { seq };
            let r = &mut scores[i * ld..][..ld];
            softmax_prefix(r, len, scale, visible);
        }
        // out rows = p · v, 64 columns of the head at a time.
        let mut c0 = 0;
        while c0 < d {
            let cols = NR.min(d - c0);
            let t = Tile {
                h: rows,
                a: &scores[i0 * ld..],
                lda: ld,
                b: &base[v_off + c0..],
                ldb: row,
                kc: visible,
                c: out.wrapping_add((start + i0) * hidden + h * d + c0),
                ldc: hidden,
                cols,
                first: true,
                epi: None,
                pf: Prefetch::NONE,
            };
            // SAFETY: `c` is rows `start + i0..` (`rows` of them), columns `h·d + c0..` (`cols`)
            // of the `[rows, hidden]` output: this head's own, which the caller lets us write.
            unsafe { tile_f32(&t) };
            c0 += cols;
        }
        i0 += rows;
    }
}

/// `r[..len]` ← softmax(scale · r[..len]); `r[len..end]` ← 0 (causally hidden keys).
fn softmax_prefix(r: &mut [f32], len: usize, scale: f32, end: usize) {
    let live = &mut r[..len];
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in live.iter_mut() {
        *x = (*x - max) * scale;
    }
    exp_slice(live);
    let inv = 1.0 / live.iter().sum::<f32>();
    for x in live.iter_mut() {
        *x *= inv;
    }
    r[len..end].fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(qkv: &[f32], s: AttentionShape) -> Vec<f64> {
        let hidden = s.hidden();
        let row = 3 * hidden;
        let mut out = vec![0f64; s.batch * s.seq * hidden];
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..s.seq {
                    let at = |j: usize, part: usize, dd: usize| {
                        qkv[(b * s.seq + j) * row + part * hidden + h * s.head_dim + dd] as f64
                    };
                    let scores: Vec<f64> = (0..s.seq)
                        .map(|j| {
                            if s.causal && j > i {
                                f64::NEG_INFINITY
                            } else {
                                (0..s.head_dim)
                                    .map(|dd| at(i, 0, dd) * at(j, 1, dd))
                                    .sum::<f64>()
                                    / (s.head_dim as f64).sqrt()
                            }
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for dd in 0..s.head_dim {
                        out[(b * s.seq + i) * hidden + h * s.head_dim + dd] =
                            (0..s.seq).map(|j| e[j] / sum * at(j, 2, dd)).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn packed_sequences_equal_separate_calls() {
        let (heads, head_dim) = (2, 8);
        let hidden = heads * head_dim;
        let lengths = [3usize, 1, 7, 5];
        let total: usize = lengths.iter().sum();
        let qkv: Vec<f32> = (0..total * 3 * hidden)
            .map(|i| ((i * 6007 % 997) as f32 / 300.0) - 1.6)
            .collect();
        let mut packed = vec![f32::NAN; total * hidden];
        attention_packed(&qkv, &lengths, heads, head_dim, true, &mut packed);
        let mut start = 0;
        for &len in &lengths {
            let shape = AttentionShape {
                batch: 1,
                seq: len,
                heads,
                head_dim,
                causal: true,
            };
            let mut alone = vec![0f32; len * hidden];
            attention(
                &qkv[start * 3 * hidden..][..len * 3 * hidden],
                shape,
                &mut alone,
            );
            assert_eq!(
                &packed[start * hidden..][..len * hidden],
                &alone[..],
                "sequence at {start}"
            );
            start += len;
        }
    }

    #[test]
    fn matches_reference_causal_and_not() {
        for (batch, seq, heads, head_dim) in
            [(1, 1, 1, 1), (2, 50, 3, 64), (3, 7, 2, 5), (1, 130, 2, 80)]
        {
            for causal in [false, true] {
                let s = AttentionShape {
                    batch,
                    seq,
                    heads,
                    head_dim,
                    causal,
                };
                let qkv: Vec<f32> = (0..batch * seq * 3 * s.hidden())
                    .map(|i| ((i * 7919 % 1000) as f32 / 250.0) - 2.0)
                    .collect();
                let mut out = vec![f32::NAN; batch * seq * s.hidden()];
                attention(&qkv, s, &mut out);
                for (idx, (&g, &r)) in out.iter().zip(&reference(&qkv, s)).enumerate() {
                    assert!(
                        (g as f64 - r).abs() < 1e-4,
                        "{s:?}: out[{idx}] = {g}, want {r}"
                    );
                }
            }
        }
    }
}
