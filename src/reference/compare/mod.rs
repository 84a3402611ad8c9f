//! Comparing a computed gradient with the f64 reference: one rule, shared by the test
//! suite, `check`, the benchmark's baseline check and the browser suite.
//!
//! For ∂L/∂logits, per element: `|g − g_ref| ≤ a·|g_ref| + b·max|g_ref| + tiny`, plus,
//! where the caller has the batch, the reference's own move under the f32 errors of the
//! log-prob and of the slope's coefficients ([`grad_sensitivity`]); a NaN or ±Inf fails
//! unless the reference is non-finite there too (the bad rows of
//! docs/MATH.md#bad-input: a NaN where it has a NaN, the same ±Inf or a NaN where it
//! has ±Inf). Why they hold, with u = 2^-24 the unit roundoff of f32:
//!
//! The kernels compute g_v = K·[G·(1[v = y] − p_v) + γ·p_v·(z_v − μ)] (K = w/τ, G the
//! row's slope ∂ℓ/∂logp, μ = Σ p z) as `at_target·1[v = y] + p_v·(c0 + c1x·x_v)` with
//! p_v = 2^(x_v·c2 − lse2), c0 = K(−G − γμ), c1x = Kγ/τ, the bracket one fma.
//! - `a`, relative (`F32_REL`): p_v's relative error is the absolute error of its
//!   exponent z_v − lse: the fma's rounding and the rounded c2, lse2 (≤ 5u·max(|z|, |lse|),
//!   4.5e-6 at the suite's |z|, |lse| ≤ 15), exp2's few ulps, and the lse's own error,
//!   a sum of n positive terms whose independent roundings add like a random walk
//!   (≈ sqrt(n)·u; the worst case n·u needs every one aligned) and which the suite holds
//!   to the log-prob tolerance 2e-5 + 1e-6·max(|z|, |lse|) ≤ 3.5e-5 ([`logp_err`]). G
//!   carries that log-prob error again, through exp(logp − old_logp). Their sum, 7e-5,
//!   rounded up: 1e-4, which also covers the two parts of g_v cancelling to a tenth of
//!   their size. A 16-bit gradient is that f32 value rounded once more: half an ulp of
//!   it, taken as one (`epsilon`).
//! - `b`, of the largest (`OF_MAX`): where the two parts of g_v cancel further, their
//!   errors (ε ≈ the lse's) stay those of the parts, ≈ 2ε·K·p_v·|G|, and do not shrink
//!   with g_v (at the target, p_y − 1 leaves u·K·|G|: the sensitivity below). The
//!   parts cancel where |G| ≈ γ·|z_v − μ|, so relative to max|g_ref| ≥ K·|G|max·(1 −
//!   p_y) that error is ≈ 2ε·p_v·γ|z_v − μ|/|G|max: a few 1e-9 at the measured
//!   ε ≤ 5e-6, γ ≤ 0.05 and the suite's p_v and G (the measured worst over the suite,
//!   with a = 1e-4 and without the sensitivity: 7e-9 of max|g_ref|). Not a worst case
//!   (a row of few, large probabilities with a large γ reaches ε·p_v), b is kept small
//!   on purpose: 2^-26 ≈ 1.5e-8 holds the small entries of a row of V = 151936 (99 %
//!   below 1e-4 of the largest) to a relative 1e-3 down to 1.7e-5 of the largest, and
//!   to being non-zero down to 1.5e-8 of it (tests/grad_rule.rs). A caller whose rows
//!   are degenerate (V = 1: 1 − p = 0 in f64, u·K·|G| in f32) passes its rows' scalar
//!   coefficients as the scale ([`within_scales`]).
//! - the sensitivity ([`grad_sensitivity`]): G itself is made in f32, of the kernels'
//!   log-prob and of products rounded to a few u. Where its terms cancel (a k3 KL
//!   term 1 − e^(ref − logp) near ref = logp, DRO's −A + β_D·d, −A against a KL term)
//!   their errors are not a part of G, and move every element of the row with it, the
//!   batch's largest element too when every row's does (every policy term masked by a
//!   rollout correction): the reference's own move under those errors bounds it. And
//!   each element's two terms, at_target and p_v·(c0 + c1x·x_v), carry p_v's relative
//!   error and the coefficients' rounding whole where they cancel: a target whose p_y
//!   is 0.998 leaves 1 − p_y to the last few u of K·G, and logits of 1e4 round z − lse
//!   to 1e-3. Neither `a` nor `b` can see those, the terms' magnitudes do.
//! - `tiny`: f16 keeps subnormals, 2^-24 apart: rounding to one is half of that, taken
//!   as one step as `epsilon` is; f32 and bf16 may be flushed to zero below 2^-126 by a
//!   GPU.

use std::cmp::Ordering;

mod sensitivity;
pub use sensitivity::{grad_sensitivity, logp_err, COEF_ROUNDING};

/// How a compared gradient is stored: its machine epsilon (1 to the next value) and the
/// absolute error allowed below its normal range (see the module's comment).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Format {
    /// The distance from 1 to the next value: 2^-23 for f32, 2^-10 for f16, 2^-7 for
    /// bf16.
    pub epsilon: f64,
    /// The absolute error allowed below the normal range: f16's subnormal step 2^-24,
    /// or f32's smallest normal where a GPU may flush to zero (f32, bf16).
    pub tiny: f64,
}

impl Format {
    /// A gradient stored in f32.
    pub const F32: Format = Format {
        epsilon: 1.0 / (1u64 << 23) as f64,
        tiny: f32::MIN_POSITIVE as f64,
    };
    /// A gradient stored in f16.
    pub const F16: Format = Format {
        epsilon: 1.0 / (1u64 << 10) as f64,
        tiny: 1.0 / (1u64 << 24) as f64,
    };
    /// A gradient stored in bf16.
    pub const BF16: Format = Format {
        epsilon: 1.0 / (1u64 << 7) as f64,
        tiny: f32::MIN_POSITIVE as f64,
    };

    /// The relative error of rounding the kernels' f32 value to this format: 0 for
    /// f32, one ulp (twice the half ulp of rounding to nearest) for a 16-bit format.
    pub fn rounding(self) -> f64 {
        if self == Format::F32 {
            0.0
        } else {
            self.epsilon
        }
    }
}

/// `a` of the f32 gradient (see the module's comment).
pub const F32_REL: f64 = 1e-4;
/// `b` (see the module's comment).
pub const OF_MAX: f64 = 1.0 / (1u64 << 26) as f64;

/// `|got − want| ≤ rel·|want| + of_scale·scale + floor`, where `scale` is the compared
/// tensor's largest finite |want| (or a per-element scale the caller derives).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// The relative part, times `|want|`.
    pub rel: f64,
    /// The part relative to the tensor's scale.
    pub of_scale: f64,
    /// The absolute part.
    pub floor: f64,
}

impl Tolerance {
    /// The rule for ∂L/∂logits stored in `format` (see the module's comment).
    pub fn logits_grad(format: Format) -> Tolerance {
        Tolerance {
            rel: F32_REL + format.rounding(),
            of_scale: OF_MAX,
            floor: format.tiny,
        }
    }

    /// Two results within `self` and `other` of the exact value are within their sum of
    /// each other: for comparing two computed gradients (fused and unfused, sharded and
    /// whole), where neither is exact.
    pub fn plus(self, other: Tolerance) -> Tolerance {
        Tolerance {
            rel: self.rel + other.rel,
            of_scale: self.of_scale + other.of_scale,
            floor: self.floor + other.floor,
        }
    }

    /// The bound of an element whose reference value is `want`, at `scale`.
    pub fn bound(&self, want: f64, scale: f64) -> f64 {
        self.rel * want.abs() + self.of_scale * scale + self.floor
    }
}

/// One compared element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Element {
    /// Its index in the compared tensor (row-major).
    pub index: usize,
    /// The computed value.
    pub got: f64,
    /// The reference's value.
    pub want: f64,
    /// The largest `|got − want|` the rule allows there.
    pub bound: f64,
}

/// What a comparison that holds saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Elements compared (the reference's non-finite ones included).
    pub compared: usize,
    /// The element nearest its bound (largest error / bound).
    pub worst: Option<Element>,
    /// The largest error / |want| where the relative part of the bound is the larger:
    /// what `a` must cover.
    pub worst_rel: f64,
    /// The largest error / scale where the part relative to the scale is the larger:
    /// what `b` must cover.
    pub worst_of_scale: f64,
}

impl Comparison {
    /// The largest error as a share of its bound (≤ 1: it held).
    pub fn share(&self) -> f64 {
        self.worst.map_or(0.0, |e| {
            (e.got - e.want).abs() / e.bound.max(f64::MIN_POSITIVE)
        })
    }
}

/// Why a comparison failed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mismatch {
    /// The tensors differ in length.
    Length {
        /// The computed tensor's length.
        got: usize,
        /// The reference's length.
        want: usize,
    },
    /// A non-finite value where the reference has a number, or a number (or another
    /// non-finite value) where the reference is non-finite.
    NotFinite(Element),
    /// An element further from the reference than its bound.
    OutOfBound(Element),
}

impl Mismatch {
    /// The element that failed (none for a length).
    pub fn element(&self) -> Option<Element> {
        match *self {
            Mismatch::Length { .. } => None,
            Mismatch::NotFinite(e) | Mismatch::OutOfBound(e) => Some(e),
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Mismatch::Length { got, want } => write!(f, "{got} elements, want {want}"),
            Mismatch::NotFinite(e) => write!(f, "[{}] = {}, want {}", e.index, e.got, e.want),
            Mismatch::OutOfBound(e) => write!(
                f,
                "[{}] = {}, want {} (err {:.3e} > bound {:.3e})",
                e.index,
                e.got,
                e.want,
                (e.got - e.want).abs(),
                e.bound
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// The larger of two errors, NaN when either is (`f64::max` would drop it).
pub fn max_err(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The largest finite |x| (0 when there is none).
pub fn largest_finite(x: &[f64]) -> f64 {
    x.iter()
        .filter(|v| v.is_finite())
        .fold(0.0, |m, v| m.max(v.abs()))
}

/// ∂L/∂logits (`got`, as stored in `format` and widened) against the reference's
/// `want`, by the rule of the module's comment.
pub fn logits_grad(got: &[f32], want: &[f64], format: Format) -> Result<Comparison, Mismatch> {
    within(got, want, Tolerance::logits_grad(format))
}

/// ∂L/∂h or ∂L/∂W of the fused head (`got`, stored in `format`), sums over `n` terms of
/// the logits' gradient Gz times a factor f (W or h), against the reference's `want`;
/// `sums[i]` = `[Σ |Gz|·|f|, Σ |f|]` over element i's terms
/// ([`head_magnitudes`](super::head_magnitudes)), `gz_max` = max|Gz|.
///
/// The kernels make Gz in f32 within the logits' rule, |ΔGz| ≤ a·|Gz| + b·max|Gz|, so
/// the sum carries Σ (a·|Gz| + b·max|Gz|)·|f| = a·`sums[0]` + b·max|Gz|·`sums[1]`. The f32
/// sum adds its own rounding Σ_k δ_k·s_k (|δ_k| ≤ u, s_k the partial sums): the bound
/// n·u·Σ|Gz·f| needs every rounding aligned; the roundings are independent, so the
/// error's spread is u·sqrt(Σ s_k²) ≤ sqrt(n)·u·Σ|Gz·f|, the margin taken here (the
/// products' own rounding adds u·Σ|Gz·f|, and h·Wᵀ's rounding of the logits is inside
/// `a`). A 16-bit ∂L/∂h or ∂L/∂W is that f32 sum rounded: `epsilon`·|want|.
pub fn head_grad(
    got: &[f32],
    want: &[f64],
    format: Format,
    n: usize,
    gz_max: f64,
    sums: &[[f64; 2]],
) -> Result<Comparison, Mismatch> {
    let u = 1.0 / (1u64 << 24) as f64;
    let sum_rel = F32_REL + ((n as f64).sqrt() + 1.0) * u;
    let tol = Tolerance {
        rel: format.rounding(),
        of_scale: 1.0,
        floor: format.tiny,
    };
    if sums.len() != want.len() {
        return Err(Mismatch::Length {
            got: sums.len(),
            want: want.len(),
        });
    }
    within_scales(got, want, tol, |i| {
        sum_rel * sums[i][0] + OF_MAX * gz_max * sums[i][1]
    })
}

/// [`logits_grad`] with each element's [`grad_sensitivity`] added to its bound.
pub fn logits_grad_with(
    got: &[f32],
    want: &[f64],
    format: Format,
    sensitivity: &[f64],
) -> Result<Comparison, Mismatch> {
    if sensitivity.len() != want.len() {
        return Err(Mismatch::Length {
            got: sensitivity.len(),
            want: want.len(),
        });
    }
    let tol = Tolerance::logits_grad(format);
    let scale = largest_finite(want);
    // the sensitivity enters through the scale: of_scale·scale(i) = b·max + s_i
    within_scales(got, want, tol, |i| scale + sensitivity[i] / tol.of_scale)
}

/// `got` against `want` by `tol`, at the scale of `want`'s largest finite element.
pub fn within(got: &[f32], want: &[f64], tol: Tolerance) -> Result<Comparison, Mismatch> {
    let scale = largest_finite(want);
    within_scales(got, want, tol, |_| scale)
}

/// `got` against `want` by `tol`, element `i` at `scale(i)`. Where `want` is NaN, `got`
/// must be NaN; where it is ±Inf, the same or NaN; anywhere else a non-finite `got`
/// fails.
pub fn within_scales(
    got: &[f32],
    want: &[f64],
    tol: Tolerance,
    scale: impl Fn(usize) -> f64,
) -> Result<Comparison, Mismatch> {
    if got.len() != want.len() {
        return Err(Mismatch::Length {
            got: got.len(),
            want: want.len(),
        });
    }
    let mut out = Comparison {
        compared: got.len(),
        ..Comparison::default()
    };
    let mut nearest = 0.0f64;
    for (index, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (got, s) = (g as f64, scale(index));
        let bound = tol.bound(w, s);
        let e = Element {
            index,
            got,
            want: w,
            bound,
        };
        if !w.is_finite() {
            // the reference's NaN only by a NaN; its ±Inf by the same or by a NaN (the
            // same infinite terms summed in another order: ∞ − ∞)
            let same = got.is_nan() || got == w;
            if !same {
                return Err(Mismatch::NotFinite(e));
            }
            continue;
        }
        if !got.is_finite() {
            return Err(Mismatch::NotFinite(e));
        }
        let err = (got - w).abs();
        // a NaN bound (a NaN scale) fails too
        let within = matches!(
            err.partial_cmp(&bound),
            Some(Ordering::Less | Ordering::Equal)
        );
        if !within {
            return Err(Mismatch::OutOfBound(e));
        }
        let ratio = if bound > 0.0 { err / bound } else { 0.0 };
        if ratio > nearest || out.worst.is_none() {
            nearest = ratio;
            out.worst = Some(e);
        }
        if tol.rel * w.abs() >= tol.of_scale * s {
            out.worst_rel = out.worst_rel.max(err / w.abs());
        } else if s > 0.0 {
            out.worst_of_scale = out.worst_of_scale.max(err / s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
