//! The float recipes of bertc: how each float result that is not a single IEEE operation is
//! computed, written once. The interpreter (`bertc-interp`) evaluates them as written here;
//! the generated code (`bertc-codegen`: Cranelift kernels, hand-assembled x86-64 kernels)
//! emits the same operations in the same order on vectors of any width, so that an artifact's
//! results are the interpreter's, bit for bit, on every target with fused multiply-add. That
//! matters beyond tidiness: a quantized model rounds its activations to integers, and a value
//! one float rounding away from a rounding boundary moves a whole integer step, which the
//! layers after it carry on.
//!
//! - **Sums** run in [`LANES`] lanes: element `i` is added, in order, to lane `i % 16`
//!   (starting from `+0.0`), and the lanes are folded in halves ([`fold`]): lane `i` plus lane
//!   `i + 8`, then `i + 4`, `i + 2`, `i + 1`. A vector ISA keeps the 16 lanes in one register
//!   of 16, two of 8 or four of 4; scalar code keeps 16 accumulators.
//! - **Dot products** of GEMMs (linears, attention's `Q Kᵀ` and `P V`) are one fused
//!   multiply-add chain per output, in order of k, from the bias (or `+0.0`): what a GEMM tile
//!   that broadcasts one row value against a panel's columns computes ([`dot`]).
//! - **Functions**: [`exp`], [`tanh`], [`gelu_erf`], [`gelu_tanh`] as fixed polynomials with
//!   fused multiply-adds, each step one IEEE operation; their constants are public so that the
//!   code generators bake the very same values.
//! - **Composites**: [`layer_norm_row`] (the two-pass, shifted LayerNorm).
//!
//! `f32::mul_add` is the fused multiply-add; callers that loop over many elements compile
//! these functions (they are `#[inline(always)]`) where the CPU's FMA is enabled.

/// A static quantization point (ONNX `QuantizeLinear` then `DequantizeLinear`):
/// `(min(max(round_ne(x / scale) + zero, lo), hi) - zero) · scale`, each step one f32
/// operation (a division, not a multiplication by the reciprocal, as the definition says).
#[inline(always)]
pub fn qdq(x: f32, scale: f32, zero: f32, lo: f32, hi: f32) -> f32 {
    centered(x, scale, zero, lo, hi) * scale
}

/// The integer of a quantization less its zero point, as f32:
/// `min(max(round_ne(x / scale) + zero, lo), hi) - zero` (`DynamicQuantizeLinear`'s and a
/// static point's, before the dequantizing multiplication).
#[inline(always)]
pub fn centered(x: f32, scale: f32, zero: f32, lo: f32, hi: f32) -> f32 {
    ((x / scale).round_ties_even() + zero).max(lo).min(hi) - zero
}

/// Lanes of a canonical sum.
pub const LANES: usize = 16;

/// The lanes of a sum folded in halves: `l[i] += l[i + 8]`, then `+ 4`, `+ 2`, `+ 1`.
#[inline(always)]
pub fn fold(mut l: [f32; LANES]) -> f32 {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            l[i] += l[i + w];
        }
    }
    l[0]
}

/// The canonical sum of `xs`: element `i` into lane `i % 16`, then [`fold`].
#[inline(always)]
pub fn sum(xs: impl IntoIterator<Item = f32>) -> f32 {
    let mut l = [0f32; LANES];
    for (i, x) in xs.into_iter().enumerate() {
        l[i % LANES] += x;
    }
    fold(l)
}

/// `init + Σ a[i] b[i]` as one fused multiply-add chain in order of `i`.
#[inline(always)]
pub fn dot(init: f32, a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .fold(init, |acc, (&x, &y)| x.mul_add(y, acc))
}

/// Inputs of [`exp`] are clamped to `[EXP_LO, EXP_HI]` (so that `2ⁿ` stays a normal float).
pub const EXP_LO: f32 = -87.3;
pub const EXP_HI: f32 = 88.0;
/// `1.5 · 2²³`: adding it rounds to an integer (`n = round(x / ln 2)`), and its bits hold `n`.
pub const EXP_MAGIC: f32 = 12582912.0;
/// `-ln 2` in two parts (`r = x - n ln 2` with two fused multiply-adds).
pub const EXP_LN2_HI: f32 = -0.693_145_75;
pub const EXP_LN2_LO: f32 = -1.428_606_8e-6;
/// The Taylor coefficients of `eʳ` to degree 6, highest first (for Horner's rule), used on
/// `|r| <= ln2/2` (relative error below 2e-7).
pub const EXP_TAYLOR: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `eˣ`, relative error about 2e-7 on `[-87.3, 88]` (inputs clamped there): `n = round(x /
/// ln 2)` by [`EXP_MAGIC`], `r = x - n ln 2`, Horner's rule on [`EXP_TAYLOR`], times `2ⁿ`
/// built in the exponent bits.
#[inline(always)]
#[allow(clippy::manual_clamp)] // max then min, as the kernels: a NaN becomes the lower bound
pub fn exp(x: f32) -> f32 {
    let x = x.max(EXP_LO).min(EXP_HI);
    let t = x.mul_add(std::f32::consts::LOG2_E, EXP_MAGIC);
    let n = t - EXP_MAGIC;
    let r = n.mul_add(EXP_LN2_HI, x);
    let r = n.mul_add(EXP_LN2_LO, r);
    let p = EXP_TAYLOR[1..]
        .iter()
        .fold(EXP_TAYLOR[0], |p, &c| p.mul_add(r, c));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The coefficients of the rational erf approximation `erf(z) = z P(z²) / Q(z²)` on
/// `z` in `[-4, 4]` (clamped outside, where erf is ±1 in f32): the numerator's from z¹³ down to
/// z¹, the denominator's from z⁸ down to z⁰. Maximum absolute error about 1e-7 (tested against
/// libm below).
pub const ERF_P: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
pub const ERF_Q: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329e-3,
    -1.426_474e-2,
];
/// `erf`'s argument is clamped to `[-ERF_CLAMP, ERF_CLAMP]`.
pub const ERF_CLAMP: f32 = 4.0;

/// Horner's rule with fused multiply-adds, highest coefficient first.
#[inline(always)]
fn horner(c: &[f32], x: f32) -> f32 {
    c[1..].iter().fold(c[0], |p, &k| p.mul_add(x, k))
}

/// `erf(z)` by [`ERF_P`] / [`ERF_Q`], `z` clamped to `[-4, 4]`.
#[inline(always)]
#[allow(clippy::manual_clamp)] // max then min, as the kernels: a NaN becomes the lower bound
pub fn erf(z: f32) -> f32 {
    let z = z.max(-ERF_CLAMP).min(ERF_CLAMP);
    let z2 = z * z;
    let p = horner(&ERF_P, z2) * z;
    p / horner(&ERF_Q, z2)
}

/// GELU, `0.5 x (1 + erf(x / √2))`, as `fma(erf(z), x/2, x/2)` with `z = x · (1/√2)`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    let e = erf(x * std::f32::consts::FRAC_1_SQRT_2);
    let h = x * 0.5;
    e.mul_add(h, h)
}

/// `√(2/π)`, of the tanh form of GELU.
pub const GELU_TANH_K: f32 = 0.797_884_6;
/// The cubic term's coefficient of the tanh form of GELU.
pub const GELU_TANH_C3: f32 = 0.044715;

/// GELU's tanh form, `0.5 x (1 + tanh(u))` with `u = √(2/π) (x + 0.044715 x³)`, computed as
/// `x / (1 + e^{-2u})`, `-2u = x (x² · (-2k · 0.044715) + (-2k))`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = (x * x).mul_add(-2.0 * GELU_TANH_K * GELU_TANH_C3, -2.0 * GELU_TANH_K) * x;
    x / (exp(u) + 1.0)
}

/// `tanh(x) = 2 / (1 + e^{-2x}) - 1`.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    2.0 / (exp(x * -2.0) + 1.0) - 1.0
}

/// LayerNorm of one row into `out`, as every kernel computes it: with `d = x - x[0]` (so that
/// a large mean does not cancel the variance away), `s = Σ d` and `q = Σ d·d` ([`sum`]s,
/// `d·d` rounded before it is added), `md = s · (1/n)`, `mean = x[0] + md`,
/// `var = max(q · (1/n) - md·md, 0)`, `inv = 1 / √(var + eps)`, then
/// `out = fma((x - mean) · inv, gamma, beta)`; `1/n` is rounded to f32 once.
#[inline(always)]
pub fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    if n == 0 {
        return;
    }
    let x0 = x[0];
    let s = sum(x.iter().map(|&v| v - x0));
    let q = sum(x.iter().map(|&v| {
        let d = v - x0;
        d * d
    }));
    let inv_n = 1.0 / n as f32;
    let md = s * inv_n;
    let mean = x0 + md;
    let var = (q * inv_n - md * md).max(0.0);
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = ((v - mean) * inv).mul_add(g, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (0..=200_000).map(|i| -10.0 + i as f32 * 1e-4)
    }

    #[test]
    fn exp_is_within_its_error_budget() {
        let mut worst = 0f64;
        // down to -80: below, eˣ is near f32's smallest normal and loses bits anyway
        for x in (0..=167_000).map(|i| -80.0 + i as f32 * 1e-3) {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "max relative exp error {worst:e}");
    }

    #[test]
    fn erf_is_within_its_error_budget() {
        let worst = grid()
            .map(|x| (erf(x) as f64 - libm::erf(x as f64)).abs())
            .fold(0f64, f64::max);
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
    }

    #[test]
    fn gelu_and_tanh_are_within_their_error_budgets() {
        let mut worst = [0f64; 3];
        for x in grid() {
            let xd = x as f64;
            let want_erf = 0.5 * xd * (1.0 + libm::erf(xd / std::f64::consts::SQRT_2));
            let u = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd * xd * xd);
            let want_tanh_form = 0.5 * xd * (1.0 + u.tanh());
            worst[0] = worst[0].max((gelu_erf(x) as f64 - want_erf).abs());
            worst[1] = worst[1].max((gelu_tanh(x) as f64 - want_tanh_form).abs());
            worst[2] = worst[2].max((tanh(x) as f64 - xd.tanh()).abs());
        }
        assert!(
            worst.iter().all(|&w| w < 2e-6),
            "gelu, gelu_tanh, tanh: {worst:?}"
        );
    }

    /// The lanes and the fold, against a sum written out by hand for 19 elements.
    #[test]
    fn sums_add_in_sixteen_lanes_folded_in_halves() {
        let x: Vec<f32> = (0..19)
            .map(|i| 1.0 + (i as f32) * 1e-7 * 3f32.powi(i % 5))
            .collect();
        let mut l = [0f32; 16];
        l.copy_from_slice(&x[..16]);
        for i in 16..19 {
            l[i - 16] += x[i];
        }
        let s8: Vec<f32> = (0..8).map(|i| l[i] + l[i + 8]).collect();
        let s4: Vec<f32> = (0..4).map(|i| s8[i] + s8[i + 4]).collect();
        let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
        assert_eq!(sum(x.iter().copied()).to_bits(), (s2[0] + s2[1]).to_bits());
        // and not the sequential sum, for these values
        let seq: f32 = x.iter().sum();
        assert_ne!(sum(x.iter().copied()).to_bits(), seq.to_bits());
    }

    #[test]
    fn layer_norm_normalises() {
        let x: Vec<f32> = (0..40).map(|i| 100.0 + (i as f32).sin()).collect();
        let (g, b) = (vec![1.0; 40], vec![0.0; 40]);
        let mut y = vec![0.0; 40];
        layer_norm_row(&x, &g, &b, 1e-12, &mut y);
        let mean: f64 = y.iter().map(|&v| v as f64).sum::<f64>() / 40.0;
        let var: f64 = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 40.0;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }
}
