//! The crate's test harness: a Burn device on every adapter found, random cases, and
//! the f64 reference on the predicting rows.

#![allow(dead_code)]

use std::sync::OnceLock;

use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use wgpu_policy_loss::reference::{self, compare, Batch, LossOutput};
use wgpu_policy_loss_burn::{LossConfig, LossExtras, PolicyLossOutput, Positions};

/// A Burn device (autodiff) on every adapter that opens one, with its name. A test
/// that finds none fails; an adapter that refuses is reported, as the library's suite
/// does.
pub fn devices() -> &'static [(String, Device)] {
    static DEVICES: OnceLock<Vec<(String, Device)>> = OnceLock::new();
    DEVICES
        .get_or_init(|| {
            let instance = wgpu_policy_loss::instance();
            let mut out = Vec::new();
            for adapter in pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all())) {
                let name = wgpu_policy_loss::describe_info(&adapter.get_info());
                match wgpu_policy_loss_burn::from_adapter(&instance, &adapter) {
                    Ok(d) => out.push((name, d.autodiff())),
                    Err(e) => eprintln!("SKIPPED adapter {name}: {e}"),
                }
            }
            assert!(!out.is_empty(), "no GPU adapter opened a Burn device");
            out
        })
        .as_slice()
}

use wgpu_policy_loss::wgpu;

/// One random batch: logits `[B, S, V]`, ids `[B, S]`, and the per-token inputs `[B, R]`.
#[derive(Clone, Debug)]
pub struct Case {
    pub b: usize,
    pub s: usize,
    pub v: usize,
    pub positions: Positions,
    pub logits: Vec<f32>,
    pub ids: Vec<i32>,
    pub mask: Vec<f32>,
    /// `[B]`, or `[B, R]` when `per_token`.
    pub advantages: Vec<f32>,
    pub per_token: bool,
    pub old: Option<Vec<f32>>,
    pub refp: Option<Vec<f32>>,
    /// The sampler's per-token temperatures `[B, R]`, where a test gives them.
    pub temps: Option<Vec<f32>>,
    /// The sampler's given kept sets over the `B·R` predicting rows (offsets, ids).
    pub keep: Option<(Vec<u32>, Vec<u32>)>,
}

impl Case {
    pub fn new(seed: u64, (b, s, v): (usize, usize, usize), positions: Positions) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let r = positions.rows_per_seq(s);
        let logits = (0..b * s * v)
            .map(|_| rng.random_range(-4.0f32..4.0))
            .collect();
        let ids = (0..b * s).map(|_| rng.random_range(0..v as i32)).collect();
        // every sequence keeps its first token, some lose their tail
        let mask = (0..b * r)
            .map(|i| {
                if i % r == 0 || rng.random_range(0.0..1.0) < 0.8 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let advantages = (0..b).map(|_| rng.random_range(-1.5f32..1.5)).collect();
        let logp = |rng: &mut StdRng| {
            (0..b * r)
                .map(|_| rng.random_range(-3.0f32..-0.05))
                .collect()
        };
        let old = Some(logp(&mut rng));
        let refp = Some(logp(&mut rng));
        Case {
            b,
            s,
            v,
            positions,
            logits,
            ids,
            mask,
            advantages,
            per_token: false,
            old,
            refp,
            temps: None,
            keep: None,
        }
    }

    pub fn r(&self) -> usize {
        self.positions.rows_per_seq(self.s)
    }

    /// Per-token advantages instead of per-sequence ones.
    pub fn per_token(mut self, seed: u64) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        self.advantages = (0..self.b * self.r())
            .map(|_| rng.random_range(-1.5f32..1.5))
            .collect();
        self.per_token = true;
        self
    }

    pub fn logits(&self, device: &Device, dtype: FloatDType) -> Tensor<3> {
        // 16-bit logits uploaded as such: CubeCL's WGSL compiler has no bf16 cast
        let shape = [self.b, self.s, self.v];
        let data = match dtype {
            FloatDType::BF16 => TensorData::new(
                self.logits
                    .iter()
                    .map(|&x| half::bf16::from_f32(x))
                    .collect(),
                shape,
            ),
            FloatDType::F16 => TensorData::new(
                self.logits
                    .iter()
                    .map(|&x| half::f16::from_f32(x))
                    .collect(),
                shape,
            ),
            _ => TensorData::new(self.logits.clone(), shape),
        };
        Tensor::<3>::from_data(data, device)
    }

    pub fn ids(&self, device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(self.ids.clone(), [self.b, self.s]), device)
    }

    pub fn rows(&self, v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [self.b, self.r()]), device)
    }

    pub fn mask(&self, device: &Device) -> Tensor<2> {
        self.rows(&self.mask, device)
    }

    pub fn advantages(&self, device: &Device) -> wgpu_policy_loss_burn::Advantages {
        if self.per_token {
            self.rows(&self.advantages, device).into()
        } else {
            Tensor::<1>::from_data(TensorData::new(self.advantages.clone(), [self.b]), device)
                .into()
        }
    }

    pub fn extras(&self, device: &Device) -> LossExtras {
        let mut e = LossExtras::default().with_positions(self.positions);
        if let Some(o) = &self.old {
            e = e.with_old_logprobs(self.rows(o, device));
        }
        if let Some(r) = &self.refp {
            e = e.with_ref_logprobs(self.rows(r, device));
        }
        if let Some(t) = &self.temps {
            e = e.with_temperatures(self.rows(t, device));
        }
        if let Some((o, i)) = &self.keep {
            let ints = |v: &[u32]| {
                let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
                let n = v.len();
                Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device)
            };
            e = e.with_kept(ints(o), ints(i));
        }
        e
    }

    /// Kept sets of `k` ids a predicting row, the row's target among them; every
    /// fourth row keeps every token (an empty range).
    pub fn kept_sets(&self, k: usize) -> (Vec<u32>, Vec<u32>) {
        let (mut offsets, mut ids) = (vec![0u32], Vec::new());
        for b in 0..self.b {
            for j in 0..self.r() {
                let y = self.ids[self.source(b, j).1] as u32;
                if (b * self.r() + j) % 4 != 3 {
                    let v = self.v as u32;
                    ids.extend((0..k as u32).map(|i| (y + 5 * i) % v).rev());
                }
                offsets.push(ids.len() as u32);
            }
        }
        (offsets, ids)
    }

    /// The logits row of predicting row `(b, j)`, and the id it predicts.
    pub fn source(&self, b: usize, j: usize) -> (usize, usize) {
        let p = self.positions.prompt_len();
        // aligned rows predict their own position; shifted ones the next
        let row = if p == 0 { j } else { p - 1 + j };
        (b * self.s + row, b * self.s + p + j)
    }

    /// The f64 reference on `logits` (the values the device read, `[B, S, V]`), and
    /// its gradient spread back over `[B, S, V]` (0 on rows that predict nothing).
    pub fn reference(&self, cfg: &LossConfig, logits: &[f32]) -> (LossOutput, Vec<f64>) {
        let (r, v) = (self.r(), self.v);
        let mut x = Vec::with_capacity(self.b * r * v);
        let mut targets = Vec::with_capacity(self.b * r);
        for b in 0..self.b {
            for j in 0..r {
                let (row, id) = self.source(b, j);
                x.extend(logits[row * v..(row + 1) * v].iter().map(|&l| l as f64));
                targets.push(self.ids[id] as u32);
            }
        }
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (mask, adv) = (f64s(&self.mask), f64s(&self.advantages));
        let (old, refp) = (
            self.old.as_deref().map(f64s),
            self.refp.as_deref().map(f64s),
        );
        let batch = Batch {
            logits: &x,
            vocab: v,
            rows_per_seq: r,
            targets: &targets,
            mask: &mask,
            advantages: &adv,
            old_logp: old.as_deref(),
            ref_logp: refp.as_deref(),
        };
        let temps = self.temps.as_deref().map(f64s);
        let sampler = reference::sampler::SamplerBatch {
            sampler: Default::default(),
            temperatures: temps.as_deref(),
            keep: self
                .keep
                .as_ref()
                .map(|(offsets, ids)| reference::sampler::KeptSets { offsets, ids }),
        };
        let want = reference::policy_loss_sampled(cfg, &batch, None, &sampler)
            .expect("the reference accepts the case");
        let mut grad = vec![0.0; self.b * self.s * v];
        for b in 0..self.b {
            for j in 0..r {
                let row = self.source(b, j).0;
                let k = b * r + j;
                grad[row * v..(row + 1) * v].copy_from_slice(&want.grad[k * v..(k + 1) * v]);
            }
        }
        (want, grad)
    }
}

/// A tensor's values as f32 on the host.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 values")
}

/// The call of the op on this case's inputs, with `logits`.
pub fn call(
    case: &Case,
    logits: Tensor<3>,
    device: &Device,
    cfg: &LossConfig,
) -> wgpu_policy_loss_burn::Result<PolicyLossOutput> {
    wgpu_policy_loss_burn::policy_loss(
        logits,
        case.ids(device),
        case.mask(device),
        case.advantages(device),
        case.extras(device),
        cfg,
    )
}

/// One call with a backward: the output, the logits the device read and ∂loss/∂logits
/// as Burn's autodiff returns it.
pub fn run(
    case: &Case,
    cfg: &LossConfig,
    device: &Device,
    dtype: FloatDType,
) -> (PolicyLossOutput, Vec<f32>, Vec<f32>) {
    let logits = case.logits(device, dtype).require_grad();
    let out = call(case, logits.clone(), device, cfg).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    let grads = out.loss.backward();
    let grad = logits.grad(&grads).expect("the logits have a gradient");
    let read = values(logits.inner());
    (out, read, values(grad))
}

/// `|got − want| ≤ tol(want)` everywhere; the largest error.
pub fn check(what: &str, got: &[f32], want: &[f64], tol: impl Fn(f64) -> f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol(w),
            "{what}: element {i} is {g}, the reference {w} (|Δ| = {err:e})"
        );
        worst = compare::max_err(worst, err);
    }
    worst
}

/// The tolerance of a gradient of logits in `dtype` (written in that dtype), given
/// the largest reference value.
pub fn grad_tol(dtype: FloatDType, scale: f64) -> impl Fn(f64) -> f64 {
    move |w: f64| match dtype {
        FloatDType::F32 => 2e-6 + 2e-5 * scale,
        // one rounding to 8 bits of mantissa, of a value computed in f32
        _ => 2e-6 + 2e-5 * scale + w.abs() / 128.0,
    }
}

pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0f64, |m, x| m.max(x.abs()))
}
