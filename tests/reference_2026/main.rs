//! The f64 reference on the modes and options of 2026 (docs/MATH.md, "Policy modes of
//! 2026" to "The off-policy sequence mask", with the library's own choices, marked
//! *Library:* there). This file: the shared batch and checks; `gradients.rs`: where the
//! formulas' gradient is the loss's derivative, against central differences of the
//! reference loss (as tests/reference.rs does), and losses by hand; `detached.rs`
//! (DPPO, VESPO, straight-through KL) and `sequences.rs` (the off-policy mask, δ, the
//! sequence level, GMPO, LUSPO, token-sum): where a weight is detached, the
//! equivalences docs/MATH.md states; `config.rs`: the defaults and the error table of
//! docs/MATH.md#the-eval-command through `LossConfig::validate`. CPU only.
// rows and vocabulary entries by index read as docs/MATH.md's formulas do
#![allow(clippy::needless_range_loop)]

use wgpu_policy_loss::reference::{clipped_term, policy_loss, policy_loss_with, row_stats};
use wgpu_policy_loss::reference::{Batch, LossOutput};
use wgpu_policy_loss::{
    Error, ImportanceSamplingLevel, KlEstimator, LossAggMode, LossConfig, PolicyLossMode,
    RolloutCorrection, RolloutLevel, RolloutMode, RowInput, TrlLossType,
};

use ImportanceSamplingLevel::Sequence as SEQ_LEVEL;
use PolicyLossMode as M;

const V: usize = 6;
const ROWS: usize = 12;

/// 3 sequences of 4 rows, V = 6: row 3 masked out, sequence 1 empty, row 10 weighs 0.5.
#[derive(Clone)]
struct Data {
    logits: Vec<f64>,
    targets: Vec<u32>,
    mask: Vec<f64>,
    adv: Vec<f64>,
    old: Vec<f64>,
    refp: Vec<f64>,
    rows_per_seq: usize,
}

/// A tiny LCG in [−1, 1): the reference tests stay free of RNG crates.
fn lcg(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

fn data(seed: u64) -> Data {
    let mut next = lcg(seed);
    let logits: Vec<f64> = (0..ROWS * V).map(|_| 2.0 * next()).collect();
    let targets: Vec<u32> = (0..ROWS)
        .map(|r| ((r * 7 + seed as usize) % V) as u32)
        .collect();
    let mut d = Data {
        logits,
        targets,
        mask: vec![1., 1., 1., 0., 0., 0., 0., 0., 1., 1., 0.5, 1.],
        adv: vec![0.8, -1.3, -0.6],
        old: Vec::new(),
        refp: Vec::new(),
        rows_per_seq: 4,
    };
    let logp = d.logp(1.0);
    // row 1 of each sequence far off (ratio e^1.5: past ε and the dual-clip constant)
    d.old = (0..ROWS)
        .map(|r| match r % 4 {
            1 => logp[r] - 1.5,
            _ => logp[r] + 0.6 * next(),
        })
        .collect();
    d.refp = d.old.iter().map(|&o| o + 0.4 * next()).collect();
    d
}

/// Per-token advantages of both signs within a sequence, one of them 0.
const PER_TOKEN: [f64; ROWS] = [
    0.9, -0.4, 0.0, 0.3, 1.0, -1.0, 0.5, 0.2, -0.7, 0.6, -1.1, 0.25,
];
/// Per-token advantages, none 0 (where ties at A = 0 would differ).
const PER_TOKEN_NONZERO: [f64; ROWS] = [
    0.9, -0.4, 0.35, 0.3, 1.0, -1.0, 0.5, 0.2, -0.7, 0.6, -1.1, 0.25,
];

impl Data {
    fn batch<'a>(&'a self, logits: &'a [f64], old: Option<&'a [f64]>) -> Batch<'a> {
        Batch {
            logits,
            vocab: V,
            rows_per_seq: self.rows_per_seq,
            targets: &self.targets,
            mask: &self.mask,
            advantages: &self.adv,
            old_logp: old,
            ref_logp: Some(&self.refp),
        }
    }

    /// The batch as given (old log-probs included).
    fn b(&self) -> Batch<'_> {
        self.batch(&self.logits, Some(&self.old))
    }

    fn with_adv(&self, adv: &[f64]) -> Data {
        Data {
            adv: adv.to_vec(),
            ..self.clone()
        }
    }

    fn rows(&self) -> usize {
        self.targets.len()
    }

    fn logp(&self, tau: f64) -> Vec<f64> {
        (0..self.rows())
            .map(|r| {
                let x = &self.logits[r * V..(r + 1) * V];
                row_stats(x, self.targets[r] as usize, tau).logp
            })
            .collect()
    }

    fn adv_of(&self, r: usize) -> f64 {
        match self.adv.len() == self.rows() {
            true => self.adv[r],
            false => self.adv[r / self.rows_per_seq],
        }
    }
}

/// The sampler's log-probs near old's (the rollout correction's usual case).
fn rollout_near(d: &Data) -> Vec<f64> {
    d.old
        .iter()
        .zip(&d.refp)
        .map(|(o, r)| o + 0.7 * (r - o))
        .collect()
}

/// The sampler's log-probs `shift` above the current ones (the off-policy mask's σ).
fn rollout_shifted(d: &Data, shift: f64) -> Vec<f64> {
    d.logp(1.0).iter().map(|l| l + shift).collect()
}

fn base() -> LossConfig {
    LossConfig {
        clip_ratio_high: 0.28,
        ..LossConfig::default()
    }
}

fn run(cfg: &LossConfig, b: &Batch<'_>, rollout: Option<&[f64]>) -> LossOutput {
    policy_loss_with(cfg, b, rollout).unwrap_or_else(|e| panic!("{cfg:?}: {e}"))
}

/// Central differences of the reference loss against its gradient, old log-probs held
/// fixed (on-policy: at the current log-probs, after checking that no old log-probs
/// give the same value and gradient).
fn fd(cfg: &LossConfig, d: &Data, on_policy: bool, rollout: Option<&[f64]>) {
    let base_old = match on_policy {
        true => d.logp(cfg.temperature as f64),
        false => d.old.clone(),
    };
    let analytic = run(cfg, &d.batch(&d.logits, Some(&base_old)), rollout);
    assert!(analytic.loss.is_finite(), "{cfg:?}: loss {}", analytic.loss);
    if on_policy {
        let plain = run(cfg, &d.batch(&d.logits, None), rollout);
        close(&plain, &analytic, 1e-12, &format!("{cfg:?} on-policy"));
    }
    let h = 1e-6;
    let mut x = d.logits.clone();
    for i in 0..x.len() {
        let x0 = x[i];
        x[i] = x0 + h;
        let up = run(cfg, &d.batch(&x, Some(&base_old)), rollout).loss;
        x[i] = x0 - h;
        let down = run(cfg, &d.batch(&x, Some(&base_old)), rollout).loss;
        x[i] = x0;
        let fd = (up - down) / (2.0 * h);
        let an = analytic.grad[i];
        assert!(
            (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
            "{cfg:?} on_policy={on_policy}: ∂loss/∂x[{i}] fd {fd} analytic {an}"
        );
    }
}

/// Loss and gradient within `tol` (relative to 1 + |value|).
fn close(got: &LossOutput, want: &LossOutput, tol: f64, what: &str) {
    let near = |a: f64, b: f64| (a - b).abs() <= tol * (1.0 + b.abs());
    assert!(
        near(got.loss, want.loss),
        "{what}: loss {} vs {}",
        got.loss,
        want.loss
    );
    for (i, (a, b)) in got.grad.iter().zip(&want.grad).enumerate() {
        assert!(near(*a, *b), "{what}: grad[{i}] {a} vs {b}");
    }
}

/// The same bits: loss, gradient, metrics, per-row outputs.
fn same_bits(got: &LossOutput, want: &LossOutput, what: &str) {
    assert_eq!(got.loss.to_bits(), want.loss.to_bits(), "{what}: loss");
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got.grad), bits(&want.grad), "{what}: grad");
    assert_eq!(got.metrics, want.metrics, "{what}: metrics");
    assert_eq!(bits(&got.logp), bits(&want.logp), "{what}: logp");
    assert_eq!(got.kept, want.kept, "{what}: kept");
    assert_eq!(got.selected, want.selected, "{what}: selected");
    assert_eq!(bits(&got.rollout_weight), bits(&want.rollout_weight));
    assert_eq!(bits(&got.off_policy_kept), bits(&want.off_policy_kept));
}

fn rollout_cfg(level: RolloutLevel, mode: RolloutMode) -> Option<RolloutCorrection> {
    Some(RolloutCorrection {
        threshold: 1.5,
        ..RolloutCorrection::new(level, mode)
    })
}

/// The rollout corrections the gradient checks run under (None: off).
fn rollouts() -> [Option<RolloutCorrection>; 4] {
    use RolloutLevel as L;
    [
        None,
        rollout_cfg(L::Token, RolloutMode::Truncate),
        rollout_cfg(L::Sequence, RolloutMode::Mask),
        rollout_cfg(L::Geometric, RolloutMode::Truncate),
    ]
}

/// `cfg` in mode `reinforce` on `d` with per-row advantages `adv`.
fn reinforce_with(cfg: &LossConfig, d: &Data, adv: &[f64], rollout: Option<&[f64]>) -> LossOutput {
    let cfg = LossConfig {
        mode: M::Reinforce,
        importance_sampling_level: ImportanceSamplingLevel::Token,
        delta: None,
        ..*cfg
    };
    run(&cfg, &d.with_adv(adv).b(), rollout)
}

/// `s_b` of every sequence, from the formula of docs/MATH.md#ratio-options.
fn seq_ratios(d: &Data, logp: &[f64]) -> Vec<f64> {
    (0..ROWS.div_ceil(d.rows_per_seq))
        .map(|s| {
            let rows = (s * d.rows_per_seq..(s + 1) * d.rows_per_seq).filter(|&r| d.mask[r] > 0.0);
            let (num, den) = rows.fold((0.0, 0.0), |(n, m), r| {
                (n + d.mask[r] * (logp[r] - d.old[r]), m + d.mask[r])
            });
            let mean: f64 = if den > 0.0 { num / den } else { 0.0 };
            mean.clamp(-20.0, 20.0).exp()
        })
        .collect()
}

mod config;
mod detached;
mod gradients;
mod sequences;
