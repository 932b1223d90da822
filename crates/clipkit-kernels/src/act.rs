//! Activations and `exp`: scalar, AVX-512 (`avx512`) and AVX2 + FMA (`avx2`). The vector
//! versions are what the GEMM epilogue and the attention softmax call on registers; the scalar ones are the portable path and the
//! reference the tests hold the vector ones to.

/// The activations CLIP checkpoints use (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// `x·σ(1.702·x)`: OpenAI's checkpoints.
    QuickGelu,
    /// The exact, erf-based GELU (`gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

/// `erfc(z)` for `z ≥ 0` is `t·exp(−z² + P(t))`, `t = 1/(1 + z/2)`, with `P`'s coefficients
/// from Numerical Recipes' Chebyshev fit (relative error < 1.2e-7 for all `z`), highest
/// degree first for Horner's rule. Shared by the scalar and vector versions.
pub(crate) const ERFC_POLY: [f32; 10] = [
    0.170_872_77,
    -0.822_152_23,
    1.488_515_9,
    -1.135_204,
    0.278_868_07,
    -0.186_288_06,
    0.096_784_18,
    0.374_091_96,
    1.000_023_7,
    -1.265_512_2,
];

/// `exp(r)` on `|r| ≤ ln2/2` by its degree-7 Taylor polynomial, highest degree first.
pub(crate) const EXP_POLY: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `ln 2` in two parts (`x − n·ln2` in two steps keeps `r` accurate for large `n`).
pub(crate) const LN2_HI: f32 = 0.693_145_75;
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;

#[inline(always)]
fn erfc_poly(t: f32) -> f32 {
    ERFC_POLY[1..].iter().fold(ERFC_POLY[0], |p, &c| p * t + c)
}

impl Activation {
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Activation::Gelu => {
                let z = x * std::f32::consts::FRAC_1_SQRT_2;
                let a = z.abs();
                let t = 1.0 / (1.0 + 0.5 * a);
                let erfc = t * (-a * a + erfc_poly(t)).exp();
                if z >= 0.0 {
                    0.5 * x * (2.0 - erfc)
                } else {
                    0.5 * x * erfc
                }
            }
            Activation::GeluTanh => {
                // 0.5·(1 + tanh(y)) = 1/(1 + e^{−2y}), without the cancellation for y ≪ 0.
                let y = 0.797_884_6 * (x + 0.044_715 * x * x * x);
                x / (1.0 + (-2.0 * y).exp())
            }
            Activation::Relu => x.max(0.0),
        }
    }

    pub fn apply_slice(self, xs: &mut [f32]) {
        if self == Activation::Identity {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::simd::avx512() {
            // SAFETY: the CPU has the features `avx512::apply_slice` is compiled for.
            unsafe { avx512::apply_slice(self, xs) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::simd::avx2() {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { avx2::apply_slice(self, xs) };
            return;
        }
        for x in xs {
            *x = self.apply(*x);
        }
    }
}

/// `xs[i] = exp(xs[i])`.
pub fn exp_slice(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512 (checked just above).
        unsafe { avx512::exp_slice(xs) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { avx2::exp_slice(xs) };
        return;
    }
    for x in xs {
        *x = x.exp();
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{Activation, ERFC_POLY, EXP_POLY, LN2_HI, LN2_LO};

    /// `exp` to about 1 ulp: `x = n·ln2 + r`, a degree-7 polynomial on `|r| ≤ ln2/2`, and
    /// `vscalefps` for the `2ⁿ`, which also gets overflow and underflow right.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn exp(x: __m512) -> __m512 {
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(-104.0)),
            _mm512_set1_ps(89.0),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn erfc_poly(t: __m512) -> __m512 {
        let mut p = _mm512_set1_ps(ERFC_POLY[0]);
        for &c in &ERFC_POLY[1..] {
            p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
        }
        p
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub fn apply(act: Activation, x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        match act {
            Activation::Identity => x,
            Activation::QuickGelu => {
                let e = exp(_mm512_mul_ps(x, _mm512_set1_ps(-1.702)));
                _mm512_div_ps(x, _mm512_add_ps(one, e))
            }
            Activation::Gelu => {
                let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
                let a = _mm512_abs_ps(z);
                let t = _mm512_div_ps(one, _mm512_fmadd_ps(a, _mm512_set1_ps(0.5), one));
                let arg = _mm512_fnmadd_ps(a, a, erfc_poly(t));
                let erfc = _mm512_mul_ps(t, exp(arg));
                let half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5));
                let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(z, _mm512_setzero_ps());
                let pos = _mm512_mul_ps(half_x, _mm512_sub_ps(_mm512_set1_ps(2.0), erfc));
                _mm512_mask_mul_ps(pos, neg, half_x, erfc)
            }
            Activation::GeluTanh => {
                let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
                let y = _mm512_mul_ps(
                    _mm512_fmadd_ps(x3, _mm512_set1_ps(0.044_715), x),
                    _mm512_set1_ps(0.797_884_6),
                );
                // 1 + tanh(y) = 2 − 2/(1 + e^{2y}) = 2·e^{2y}/(1 + e^{2y}) = 2/(1 + e^{−2y}).
                let e = exp(_mm512_mul_ps(y, _mm512_set1_ps(-2.0)));
                _mm512_div_ps(x, _mm512_add_ps(one, e))
            }
            Activation::Relu => _mm512_max_ps(x, _mm512_setzero_ps()),
        }
    }

    /// [`Activation::apply_slice`] on AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and DQ.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn apply_slice(act: Activation, xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(16);
        for c in &mut chunks {
            let p = c.as_mut_ptr();
            // SAFETY: `p` points at 16 floats of `xs`.
            unsafe { _mm512_storeu_ps(p, apply(act, _mm512_loadu_ps(p))) };
        }
        let rest = chunks.into_remainder();
        let mask = (1u32 << rest.len()) as u16 - 1;
        let p = rest.as_mut_ptr();
        // SAFETY: the mask covers exactly the `rest.len()` floats left at `p`.
        unsafe {
            let v = apply(act, _mm512_maskz_loadu_ps(mask, p));
            _mm512_mask_storeu_ps(p, mask, v);
        }
    }

    /// [`super::exp_slice`] on AVX-512.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_slice(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(16);
        for c in &mut chunks {
            let p = c.as_mut_ptr();
            // SAFETY: `p` points at 16 floats of `xs`.
            unsafe { _mm512_storeu_ps(p, exp(_mm512_loadu_ps(p))) };
        }
        let rest = chunks.into_remainder();
        let mask = (1u32 << rest.len()) as u16 - 1;
        let p = rest.as_mut_ptr();
        // SAFETY: the mask covers exactly the `rest.len()` floats left at `p`.
        unsafe {
            let v = exp(_mm512_maskz_loadu_ps(mask, p));
            _mm512_mask_storeu_ps(p, mask, v);
        }
    }
}

/// The AVX2 + FMA versions, for the x86-64 CPUs without AVX-512: the AVX-512 versions'
/// reductions and polynomials on eight lanes.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{Activation, ERFC_POLY, EXP_POLY, LN2_HI, LN2_LO};

    /// `2ⁿ` for integral `n` in `[-150, 128]`, as two factors that are each representable, so
    /// the product over- and underflows as `exp` should (AVX-512's `vscalefps` does this in
    /// one).
    ///
    /// # Safety
    /// The CPU has AVX2 (this is inlined into the `avx2` functions below).
    #[inline(always)]
    unsafe fn exp2_int(n: __m256) -> (__m256, __m256) {
        // SAFETY: register-only AVX2 intrinsics; the caller guarantees AVX2.
        unsafe {
            let n = _mm256_cvtps_epi32(n);
            let n1 = _mm256_srai_epi32::<1>(n);
            let n2 = _mm256_sub_epi32(n, n1);
            let bias = _mm256_set1_epi32(127);
            let pow = |e: __m256i| {
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(e, bias)))
            };
            (pow(n1), pow(n2))
        }
    }

    /// `exp` to about 1 ulp: the AVX-512 version's reduction and polynomial.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-104.0)),
            _mm256_set1_ps(89.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        // SAFETY: this function is compiled for (and only callable with) AVX2.
        let (s1, s2) = unsafe { exp2_int(n) };
        _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn erfc_poly(t: __m256) -> __m256 {
        let mut p = _mm256_set1_ps(ERFC_POLY[0]);
        for &c in &ERFC_POLY[1..] {
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
        }
        p
    }

    /// [`Activation::apply`] on eight lanes, with the scalar version's formulas.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn apply(act: Activation, x: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        match act {
            Activation::Identity => x,
            Activation::QuickGelu => {
                let e = exp(_mm256_mul_ps(x, _mm256_set1_ps(-1.702)));
                _mm256_div_ps(x, _mm256_add_ps(one, e))
            }
            Activation::Gelu => {
                let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
                let a = _mm256_and_ps(z, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
                let t = _mm256_div_ps(one, _mm256_fmadd_ps(a, _mm256_set1_ps(0.5), one));
                let erfc = _mm256_mul_ps(t, exp(_mm256_fnmadd_ps(a, a, erfc_poly(t))));
                let half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5));
                let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(z, _mm256_setzero_ps());
                let pos = _mm256_mul_ps(half_x, _mm256_sub_ps(_mm256_set1_ps(2.0), erfc));
                _mm256_blendv_ps(pos, _mm256_mul_ps(half_x, erfc), neg)
            }
            Activation::GeluTanh => {
                let x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                let y = _mm256_mul_ps(
                    _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044_715), x),
                    _mm256_set1_ps(0.797_884_6),
                );
                let e = exp(_mm256_mul_ps(y, _mm256_set1_ps(-2.0)));
                _mm256_div_ps(x, _mm256_add_ps(one, e))
            }
            Activation::Relu => _mm256_max_ps(x, _mm256_setzero_ps()),
        }
    }

    /// Lane mask for `_mm256_mask{load,store}_ps`: the first `lanes` (≤ 8) lanes set.
    ///
    /// # Safety
    /// The CPU has AVX2 (this is inlined into AVX2 functions).
    #[inline(always)]
    pub(crate) unsafe fn lane_mask(lanes: usize) -> __m256i {
        // SAFETY: register-only AVX2 intrinsics; the caller guarantees AVX2.
        unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), idx)
        }
    }

    /// `f(chunk)` over `xs` eight floats at a time, the tail through masked loads and stores.
    ///
    /// # Safety
    /// The CPU has AVX2 (this is inlined into AVX2 functions).
    #[inline(always)]
    unsafe fn map_slice(xs: &mut [f32], f: impl Fn(__m256) -> __m256) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            let p = c.as_mut_ptr();
            // SAFETY: `p` points at eight floats of `xs`; AVX2 is the caller's guarantee.
            unsafe { _mm256_storeu_ps(p, f(_mm256_loadu_ps(p))) };
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let p = rest.as_mut_ptr();
            // SAFETY: the mask covers exactly the `rest.len()` floats left; AVX2 as above.
            unsafe {
                let m = lane_mask(rest.len());
                _mm256_maskstore_ps(p, m, f(_mm256_maskload_ps(p, m)));
            }
        }
    }

    /// [`Activation::apply_slice`] on AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn apply_slice(act: Activation, xs: &mut [f32]) {
        // SAFETY: this function is compiled for AVX2 and FMA, which the caller guarantees.
        unsafe { map_slice(xs, |v| apply(act, v)) };
    }

    /// [`super::exp_slice`] on AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_slice(xs: &mut [f32]) {
        // SAFETY: as in `apply_slice`.
        unsafe { map_slice(xs, |v| exp(v)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 references, independent of the f32 formulas above.
    fn reference(act: Activation, x: f64) -> f64 {
        match act {
            Activation::Identity => x,
            Activation::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Activation::Gelu => 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            }
            Activation::Relu => x.max(0.0),
        }
    }

    /// erf by its Taylor series (|x| ≤ 3) or continued fraction for erfc (|x| > 3), in f64.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a <= 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * (a + f))
        };
        v.copysign(x)
    }

    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.003).collect();
        v.extend([-30.0, -12.5, -9.0, 9.0, 12.5, 30.0, 0.0, -0.0, 1e-8, -1e-8]);
        v
    }

    fn check(act: Activation, got: &[f32], xs: &[f32], what: &str) {
        for (&x, &g) in xs.iter().zip(got) {
            let want = reference(act, x as f64);
            let err = (g as f64 - want).abs();
            assert!(
                err <= 2e-6 * want.abs() + 1e-8,
                "{what} {act:?}({x}) = {g}, want {want} (err {err:e})"
            );
        }
    }

    #[test]
    fn activations_match_f64_references_on_both_paths() {
        let xs = inputs();
        for act in [
            Activation::QuickGelu,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::Relu,
            Activation::Identity,
        ] {
            let scalar: Vec<f32> = xs.iter().map(|&x| act.apply(x)).collect();
            check(act, &scalar, &xs, "scalar");
            let mut vector = xs.clone();
            act.apply_slice(&mut vector);
            check(act, &vector, &xs, "slice");
        }
    }

    #[test]
    fn exp_is_accurate_and_saturates() {
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.044).collect();
        xs.extend([-1000.0, -104.0, -88.0, 88.0, 1000.0, f32::NEG_INFINITY]);
        let mut got = xs.clone();
        exp_slice(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = (x as f64).exp();
            if want > f32::MAX as f64 {
                assert!(g >= f32::MAX, "exp({x}) = {g}, want overflow");
            } else if want < 1e-38 {
                assert!(g < 1e-37, "exp({x}) = {g}, want ~0");
            } else {
                assert!(
                    ((g as f64 - want) / want).abs() < 3e-7,
                    "exp({x}) = {g}, want {want}"
                );
            }
        }
    }
}
