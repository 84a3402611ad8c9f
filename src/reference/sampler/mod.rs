//! The sampler's distribution, one row at a time (docs/MATH.md, "The sampler's
//! distribution" and "The log-prob primitive"): the logits capped and divided by the
//! row's temperature, the kept set (given, or computed from top-k, top-p and min-p by
//! value, so that ties never depend on the order of the vocabulary), the row's
//! statistics over that set, and the vector-Jacobian product of `logp`, `H` and `lse`.
//!
//! With every option off and the whole vocabulary kept, [`sampled_row`] gives the
//! numbers of [`super::row_stats`] (it computes them with it), so the plain loss is
//! the special case, not a second implementation.

use crate::error::{Error, Result};

mod batch;
pub use batch::{KeptSets, SamplerBatch};

/// How the sampler shaped a row before it drew from it. Every option is off by default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// `c` of `s = c·tanh(x / c)`; `None`: the identity.
    pub softcap: Option<f64>,
    /// Keep the tokens with fewer than `k` larger values; 0 or −1: off.
    pub top_k: i64,
    /// Keep the most probable tokens until their mass reaches `p`; 1: off.
    pub top_p: f64,
    /// Keep the tokens at least `min_p` times as probable as the most probable; 0: off.
    pub min_p: f64,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            softcap: None,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

impl Sampler {
    /// Whether top-k, top-p or min-p choose a kept set.
    pub fn computes_set(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// The bad-input table of docs/MATH.md#bad-input for the options: an `Err` naming
    /// the option.
    pub fn validate(&self) -> Result<()> {
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::arg(
                    "logit_softcap",
                    format!("{c}: must be > 0 and finite"),
                ));
            }
        }
        if self.top_k < -1 {
            return Err(Error::arg("top_k", format!("{}: must be ≥ −1", self.top_k)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::arg(
                "top_p",
                format!("{}: must be in (0, 1]", self.top_p),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::arg(
                "min_p",
                format!("{}: must be in [0, 1]", self.min_p),
            ));
        }
        Ok(())
    }
}

/// One row under the sampler's distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledRow {
    /// z_v = s_v / τ
    pub z: Vec<f64>,
    /// dz_v/dx_v = σ'_v / τ, σ' = 1 − tanh²(x/c) (1 without a softcap)
    pub dz: Vec<f64>,
    /// K
    pub keep: Vec<bool>,
    /// log Σ_{v∈K} e^{z_v}
    pub lse: f64,
    /// p_v = e^{z_v − lse} on K, 0 elsewhere
    pub p: Vec<f64>,
    /// Σ_{v∈K} p_v z_v
    pub mean_z: f64,
    /// lse − Σ_{v∈K} p_v z_v
    pub entropy: f64,
}

/// Row `x` under `sampler` at temperature `tau`, with the kept set `given` (ids in `[0,
/// V)`, any order, none twice; empty: every token) or computed from the options. A
/// given set together with a computed option is an `Err` naming `keep_offsets`, as
/// docs/MATH.md#given-kept-sets says; a bad id one naming `keep_ids`; a bad temperature
/// one naming `temperatures`.
pub fn sampled_row(
    x: &[f64],
    tau: f64,
    sampler: &Sampler,
    given: Option<&[u32]>,
) -> Result<SampledRow> {
    sampler.validate()?;
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::arg(
            "temperatures",
            format!("{tau}: must be > 0 and finite"),
        ));
    }
    if given.is_some() && sampler.computes_set() {
        return Err(Error::arg(
            "keep_offsets",
            "a given kept set together with top_k, top_p or min_p",
        ));
    }
    let (z, dz) = sampler_logits(x, sampler.softcap, tau);
    let keep = match given {
        Some(ids) => given_keep(ids, x.len())?,
        None => computed_keep(&z, sampler),
    };
    let mut row = over_kept(z, dz, keep);
    if sampler.softcap.is_none() && row.keep.iter().all(|&k| k) {
        // the plain row, with its limits for ±inf logits
        let plain = super::row_stats(x, 0, tau);
        (row.lse, row.entropy) = (plain.lse, plain.entropy);
    }
    Ok(row)
}

/// `z_v = c·tanh(x_v / c) / τ` and its derivative `σ'_v / τ`.
pub fn sampler_logits(x: &[f64], softcap: Option<f64>, tau: f64) -> (Vec<f64>, Vec<f64>) {
    x.iter()
        .map(|&v| match softcap {
            Some(c) => {
                let t = (v / c).tanh();
                (c * t / tau, (1.0 - t * t) / tau)
            }
            None => (v / tau, 1.0 / tau),
        })
        .unzip()
}

/// A given set as a membership mask: every id in `[0, vocab)` and none twice (an
/// `Err` naming `keep_ids`); an empty set keeps every token.
pub fn given_keep(ids: &[u32], vocab: usize) -> Result<Vec<bool>> {
    if ids.is_empty() {
        return Ok(vec![true; vocab]);
    }
    let mut keep = vec![false; vocab];
    for &id in ids {
        let slot = keep.get_mut(id as usize).ok_or_else(|| {
            Error::arg(
                "keep_ids",
                format!("id {id} outside the vocabulary [0, {vocab})"),
            )
        })?;
        if *slot {
            return Err(Error::arg("keep_ids", format!("id {id} twice in one row")));
        }
        *slot = true;
    }
    Ok(keep)
}

/// The computed set of docs/MATH.md#computed-kept-sets, in vLLM's order (min-p, top-k,
/// then top-p over what they kept), every rule by value: tokens of equal `z` are kept
/// or dropped together, so K does not depend on the order of the vocabulary. (π'_u >
/// π'_v is z_u > z_v: the exponential is increasing, and comparing `z` keeps ties that
/// e^z would round apart or together.)
pub fn computed_keep(z: &[f64], s: &Sampler) -> Vec<bool> {
    let mut keep = vec![true; z.len()];
    if z.iter().any(|v| v.is_nan()) {
        // a NaN has no rank: the row keeps everything, and its statistics are NaN
        return keep;
    }
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if s.min_p > 0.0 {
        let floor = max + s.min_p.ln();
        keep.iter_mut().zip(z).for_each(|(k, &v)| *k &= v >= floor);
    }
    if s.top_k > 0 {
        let k = s.top_k as usize;
        for (v, kv) in keep.iter_mut().enumerate() {
            *kv &= z.iter().filter(|&&u| u > z[v]).count() < k;
        }
    }
    if s.top_p < 1.0 {
        top_p_keep(z, &mut keep, s.top_p, max);
    }
    keep
}

/// Top-p over the renormalised mass of what `keep` holds: a token (with every token
/// tied with it) stays when the mass strictly above it is below `p`.
fn top_p_keep(z: &[f64], keep: &mut [bool], p: f64, max: f64) {
    let mut kept: Vec<usize> = (0..z.len()).filter(|&v| keep[v]).collect();
    kept.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
    let mass: Vec<f64> = kept.iter().map(|&v| (z[v] - max).exp()).collect();
    let total: f64 = mass.iter().sum();
    let (mut above, mut i) = (0.0, 0);
    while i < kept.len() {
        // the group of tokens tied with kept[i] (at least kept[i] itself)
        let tied = |&&v: &&usize| z[v] == z[kept[i]];
        let j = i + 1 + kept[i + 1..].iter().take_while(tied).count();
        let stays = above / total < p;
        for &v in &kept[i..j] {
            keep[v] = stays;
        }
        above += mass[i..j].iter().sum::<f64>();
        i = j;
    }
}

/// The statistics over K, about its largest z.
fn over_kept(z: Vec<f64>, dz: Vec<f64>, keep: Vec<bool>) -> SampledRow {
    let m = z
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(&v, _)| v)
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z
        .iter()
        .zip(&keep)
        .map(|(&v, &k)| if k { (v - m).exp() } else { 0.0 })
        .collect();
    let s: f64 = e.iter().sum();
    let lse = m + s.ln();
    let p: Vec<f64> = e.iter().map(|&e| e / s).collect();
    // p·z with p = 0 is 0 (a −inf logit outside the mass)
    let mean_z: f64 = p
        .iter()
        .zip(&z)
        .filter(|(&p, _)| p > 0.0)
        .map(|(&p, &v)| p * v)
        .sum();
    SampledRow {
        entropy: lse - mean_z,
        z,
        dz,
        keep,
        lse,
        p,
        mean_z,
    }
}

impl SampledRow {
    /// `z_y − lse`, or an `Err` naming `targets` where `y` is outside the vocabulary or
    /// the kept set.
    pub fn logp(&self, y: usize) -> Result<f64> {
        match self.keep.get(y) {
            Some(true) => Ok(self.z[y] - self.lse),
            Some(false) => Err(Error::arg(
                "targets",
                format!("id {y} outside the kept set"),
            )),
            None => Err(Error::arg(
                "targets",
                format!("id {y} outside the vocabulary [0, {})", self.z.len()),
            )),
        }
    }

    /// The primitive's vector-Jacobian product for upstream `a = ∂L/∂logp` (with its
    /// target `y`; `None` where `a` is 0), `b = ∂L/∂H`, `c = ∂L/∂lse`:
    /// σ'_v/τ·[a·(1[v = y] − p_v) − b·p_v·(z_v − Σ p z) + c·p_v] on K, 0 outside it.
    pub fn vjp(&self, y: Option<usize>, a: f64, b: f64, c: f64) -> Vec<f64> {
        (0..self.z.len())
            .map(|v| {
                if !self.keep[v] {
                    return 0.0;
                }
                let p = self.p[v];
                let centred = if p > 0.0 {
                    p * (self.z[v] - self.mean_z)
                } else {
                    0.0
                };
                let onehot = f64::from(y == Some(v));
                self.dz[v] * (a * (onehot - p) - b * centred + c * p)
            })
            .collect()
    }

    /// The row's ∂Loss/∂x (docs/MATH.md#the-samplers-distribution): its slope `G =
    /// ∂ℓ/∂logp` at target `y` and its entropy coefficient `w·γ` (the loss has −w·γ·H).
    pub fn loss_grad(&self, y: usize, big_g: f64, w_gamma: f64) -> Vec<f64> {
        self.vjp(Some(y), big_g, -w_gamma, 0.0)
    }
}

#[cfg(test)]
mod tests;
