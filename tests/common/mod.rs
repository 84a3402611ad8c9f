//! Shared by every test file: the contexts to test (every adapter, each on its native
//! paths and on the forced fallback), random data, and error measurement against the
//! f64 reference.
#![allow(dead_code)]

#[cfg(feature = "cli")]
use std::path::Path;
#[cfg(feature = "cli")]
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod head;
pub mod primitive;
pub mod tally;

#[allow(unused_imports)] // not every test file counts
pub use tally::{skipped_part, Tally};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use wgpu_policy_loss::half::{bf16, f16};
use wgpu_policy_loss::reference::compare;
use wgpu_policy_loss::{
    Context, DType, KlEstimator, LossAggMode, LossConfig, Paths, PolicyLossMode,
};

/// Every adapter that opens a device, each on the paths it has and, where those
/// differ, on the fallback. No adapter is a loud failure (a GPU test suite that runs
/// nothing must not pass); an adapter that is listed but refuses a device is printed
/// and skipped, or fails the tests under `WGPU_POLICY_LOSS_STRICT=1`.
pub fn contexts() -> &'static [Context] {
    static CONTEXTS: OnceLock<Vec<Context>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        let mut out = Vec::new();
        for ctx in opened() {
            if ctx.paths() != Paths::FALLBACK {
                out.push(ctx.with_paths(Paths::FALLBACK));
            }
            out.push(ctx);
        }
        out
    })
}

/// Every adapter that opens a device, once, on its own paths: for tests of the kernels
/// that work on O(rows) data, whose code does not change with the paths.
pub fn natives() -> impl Iterator<Item = &'static Context> {
    contexts()
        .iter()
        .filter(|c| c.paths() == c.available_paths())
}

/// A fresh context on every adapter that opens a device (its own pipeline cache and
/// allocation counts), the refusals printed. Panics, saying why, when none opens.
pub fn opened() -> Vec<Context> {
    use std::io::Write;
    let open = Context::open_all().unwrap_or_else(|e| match e {
        wgpu_policy_loss::Error::NoAdapter(_) => panic!(
            "{e}: these tests need one. On a machine without a GPU run ./scripts/test.sh, \
             which installs Mesa's lavapipe (Vulkan) and llvmpipe (GL)."
        ),
        _ => panic!("{e}"),
    });
    for u in &open.unavailable {
        // straight to stderr: the test harness captures println!/eprintln!, and a
        // skipped adapter must be seen even when every test passes
        let _ = writeln!(std::io::stderr(), "SKIPPED adapter {u}");
    }
    // every loop over the contexts runs at least once: a suite that ran on nothing
    // must not pass
    assert!(
        !open.contexts.is_empty(),
        "no GPU adapter opened a device, and open_all did not say so"
    );
    open.contexts
}

/// "adapter (backend) [paths]", for assertion messages.
pub fn name(ctx: &Context) -> String {
    let layout = match ctx.lane_blocks() {
        true => "lane blocks",
        false => "strided lanes",
    };
    format!("{} [{}, {layout}]", ctx.describe(), ctx.paths().describe())
}

pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// Logits stored in one of the three dtypes, with their exact f64 values.
pub struct Logits {
    pub dtype: DType,
    pub f32: Vec<f32>,
    pub f16: Vec<f16>,
    pub bf16: Vec<bf16>,
}

impl Logits {
    /// Rounds `values` to `dtype`.
    pub fn from_f32(dtype: DType, values: &[f32]) -> Self {
        let mut l = Logits {
            dtype,
            f32: Vec::new(),
            f16: Vec::new(),
            bf16: Vec::new(),
        };
        match dtype {
            DType::F32 => l.f32 = values.to_vec(),
            DType::F16 => l.f16 = values.iter().map(|&v| f16::from_f32(v)).collect(),
            DType::Bf16 => l.bf16 = values.iter().map(|&v| bf16::from_f32(v)).collect(),
        }
        l
    }

    pub fn host(&self) -> wgpu_policy_loss::HostLogits<'_> {
        use wgpu_policy_loss::HostLogits as H;
        match self.dtype {
            DType::F32 => H::F32(&self.f32),
            DType::F16 => H::F16(&self.f16),
            DType::Bf16 => H::Bf16(&self.bf16),
        }
    }

    /// The stored values, exactly, as f64.
    pub fn values(&self) -> Vec<f64> {
        self.values_in(0, self.host().len())
    }

    /// Elements `a .. b`, exactly, as f64.
    pub fn values_in(&self, a: usize, b: usize) -> Vec<f64> {
        let h = self.host();
        (a..b).map(|i| h.get(i)).collect()
    }

    pub fn bytes(&self) -> &[u8] {
        match self.dtype {
            DType::F32 => bytemuck::cast_slice(&self.f32),
            DType::F16 => bytemuck::cast_slice(&self.f16),
            DType::Bf16 => bytemuck::cast_slice(&self.bf16),
        }
    }
}

/// Normal-ish logits with scale `scale` (sum of uniforms), like a language model's.
pub fn random_logits(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let u: f32 = (0..4).map(|_| r.random_range(-1.0f32..1.0)).sum();
            u * scale
        })
        .collect()
}

pub fn random_targets(seed: u64, rows: usize, vocab: u32) -> Vec<u32> {
    let mut r = rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..rows).map(|_| r.random_range(0..vocab)).collect()
}

/// The tolerance every row statistic is held to, against the f64 reference computed on
/// the same (already rounded) logits: the kernels accumulate in f32, so the error
/// grows with the magnitude of the values involved.
///
/// |gpu − ref| ≤ 2e-5 + 1e-6 · scale, where scale is max(|lse|, max|z|) for the row
/// (about 16 f32 ulps of the largest value; lavapipe's worst seen is ~5e-6 at V=151936).
pub fn tolerance(scale: f64) -> f64 {
    2e-5 + 1e-6 * scale
}

/// Largest error seen and where, over many rows.
#[derive(Debug, Default, Clone, Copy)]
pub struct MaxErr {
    pub abs: f64,
    pub row: usize,
}

impl MaxErr {
    pub fn add(&mut self, row: usize, err: f64) {
        if err > self.abs || err.is_nan() {
            self.abs = err;
            self.row = row;
        }
    }
}

/// Compares one value: both non-finite in the same way, or within `tol`.
pub fn close(got: f32, want: f64, tol: f64) -> Result<f64, String> {
    let g = got as f64;
    if want.is_nan() {
        return if g.is_nan() {
            Ok(0.0)
        } else {
            Err(format!("got {g}, want NaN"))
        };
    }
    if want.is_infinite() {
        return if g == want {
            Ok(0.0)
        } else {
            Err(format!("got {g}, want {want}"))
        };
    }
    let err = (g - want).abs();
    if err <= tol {
        Ok(err)
    } else {
        Err(format!(
            "got {g}, want {want}, |err| {err:.3e} > tol {tol:.3e}"
        ))
    }
}

/// Runs the recording API on views the caller builds over uploaded buffers, and reads
/// the per-row results back.
pub fn run_views(
    ctx: &Context,
    logits_bytes: &[u8],
    targets: &[u32],
    tau: f32,
    make: impl for<'a> FnOnce(
        &'a wgpu_policy_loss::wgpu::Buffer,
        &'a wgpu_policy_loss::wgpu::Buffer,
    ) -> (
        wgpu_policy_loss::LogitsView<'a>,
        wgpu_policy_loss::TargetsView<'a>,
    ),
) -> wgpu_policy_loss::Result<wgpu_policy_loss::RowStatsHost> {
    let x = ctx.upload("logits", logits_bytes);
    let y = ctx.upload("targets", bytemuck::cast_slice(targets));
    let (lv, tv) = make(&x, &y);
    let rows = lv.rows;
    let out = wgpu_policy_loss::RowStatsBuffers::new(ctx, rows);
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu_policy_loss::wgpu::CommandEncoderDescriptor { label: None });
    ctx.record_row_stats(&mut enc, &lv, &tv, tau, &out.outputs())?;
    let mut got = ctx.read_f32s(enc, &[&out.lse, &out.logp, &out.entropy], rows as usize)?;
    let entropy = got.pop().unwrap();
    let logp = got.pop().unwrap();
    let lse = got.pop().unwrap();
    Ok(wgpu_policy_loss::RowStatsHost { lse, logp, entropy })
}

/// Bit patterns of every output, for exact comparisons.
pub fn bits(r: &wgpu_policy_loss::RowStatsHost) -> Vec<[u32; 3]> {
    (0..r.lse.len())
        .map(|i| {
            [
                r.lse[i].to_bits(),
                r.logp[i].to_bits(),
                r.entropy[i].to_bits(),
            ]
        })
        .collect()
}

/// A [`LossCase`]'s per-row inputs on the device.
pub struct RowBuffers {
    pub targets: wgpu_policy_loss::wgpu::Buffer,
    pub mask: wgpu_policy_loss::wgpu::Buffer,
    pub adv_seq: wgpu_policy_loss::wgpu::Buffer,
    pub old: wgpu_policy_loss::wgpu::Buffer,
    pub refp: wgpu_policy_loss::wgpu::Buffer,
}

impl RowBuffers {
    /// A head call's inputs on these rows (`rows_per_seq` a sequence, one advantage a
    /// sequence, the old log-probs; the reference ones are the caller's to add).
    pub fn head_inputs<'a>(
        &'a self,
        hidden: wgpu_policy_loss::MatrixView<'a>,
        lm_head: impl Into<wgpu_policy_loss::VocabBlocks<'a>>,
        rows_per_seq: u32,
    ) -> wgpu_policy_loss::HeadInputs<'a> {
        use wgpu_policy_loss::{Advantages, F32View, HeadInputs, TargetsView};
        HeadInputs::new(
            hidden,
            lm_head,
            TargetsView::new(&self.targets).with_sequences(rows_per_seq, rows_per_seq as u64),
            F32View::new(&self.mask),
            Advantages::PerSequence(F32View::new(&self.adv_seq)),
        )
        .with_old_logprobs(F32View::new(&self.old))
    }
}

/// A batch for the loss tests: `seqs` sequences of `rows_per_seq` rows, vocab `vocab`.
/// Sequence 1 is entirely masked out (an empty sequence), a few other rows too, and
/// every masked-out row has a token id outside the vocabulary (allowed there).
#[derive(Clone)]
pub struct LossCase {
    pub vocab: u32,
    pub rows_per_seq: u32,
    pub seqs: u32,
    pub logits: Vec<f32>,
    pub targets: Vec<u32>,
    pub mask: Vec<f32>,
    pub adv_seq: Vec<f32>,
    pub adv_tok: Vec<f32>,
    pub old: Vec<f32>,
    pub refp: Vec<f32>,
    /// The sampler's log-probs: near the old ones where the mask is > 0, junk (NaN,
    /// ±inf, huge) where it is 0.
    pub rollout: Vec<f32>,
    /// The sampler's per-token temperatures, where a test gives them (none by default).
    pub temps: Option<Vec<f32>>,
    /// The sampler's given kept sets (CSR offsets, ids), where a test gives them.
    pub keep: Option<(Vec<u32>, Vec<u32>)>,
}

impl LossCase {
    pub fn new(seed: u64, seqs: u32, rows_per_seq: u32, vocab: u32) -> Self {
        let rows = (seqs * rows_per_seq) as usize;
        let logits = random_logits(seed, rows * vocab as usize, 2.0);
        let mut r = rng(seed + 1);
        let mut targets = random_targets(seed, rows, vocab);
        let mut mask: Vec<f32> = (0..rows)
            .map(|i| if i % 7 == 3 { 0.0 } else { 1.0 })
            .collect();
        if seqs > 1 {
            for i in 0..rows_per_seq as usize {
                mask[rows_per_seq as usize + i] = 0.0;
            }
        }
        if rows > 1 {
            mask[1] = 0.5; // a fractional weight
        }
        for (t, m) in targets.iter_mut().zip(&mask) {
            if *m == 0.0 {
                *t = vocab + 17;
            }
        }
        let adv_seq = (0..seqs).map(|_| r.random_range(-1.5f32..1.5)).collect();
        let adv_tok = (0..rows).map(|_| r.random_range(-1.5f32..1.5)).collect();
        // old/ref log-probs near the current ones, so ratios land inside and outside
        // the clip band
        let exact = wgpu_policy_loss::reference::row_stats_batch(
            &logits,
            vocab as usize,
            &targets
                .iter()
                .map(|&t| t.min(vocab - 1))
                .collect::<Vec<_>>(),
            1.0,
        );
        // every fifth row far below, so that the ratio exceeds the dual-clip constant 3
        // (whatever the temperature) and dual-clip bites where A < 0
        let old: Vec<f32> = exact
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let shift = if i % 5 == 2 {
                    -5.0
                } else {
                    r.random_range(-0.6f64..0.6)
                };
                (s.logp + shift) as f32
            })
            .collect();
        let refp = old
            .iter()
            .map(|&o| o + r.random_range(-0.5f32..0.5))
            .collect();
        let junk = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30];
        let rollout = old
            .iter()
            .zip(&mask)
            .enumerate()
            .map(|(i, (&o, &m))| {
                if m > 0.0 {
                    o + r.random_range(-0.8f32..0.8)
                } else {
                    junk[i % junk.len()]
                }
            })
            .collect();
        LossCase {
            vocab,
            rows_per_seq,
            seqs,
            logits,
            targets,
            mask,
            adv_seq,
            adv_tok,
            old,
            refp,
            rollout,
            temps: None,
            keep: None,
        }
    }

    /// The per-row inputs a device-API test binds: ids, mask, per-sequence advantages,
    /// old and reference log-probs, a buffer each.
    pub fn upload_rows(&self, ctx: &Context) -> RowBuffers {
        let up = |v: &[u8]| ctx.upload("case rows", v);
        RowBuffers {
            targets: up(bytemuck::cast_slice(&self.targets)),
            mask: up(bytemuck::cast_slice(&self.mask)),
            adv_seq: up(bytemuck::cast_slice(&self.adv_seq)),
            old: up(bytemuck::cast_slice(&self.old)),
            refp: up(bytemuck::cast_slice(&self.refp)),
        }
    }

    pub fn rows(&self) -> usize {
        self.targets.len()
    }

    /// Rows `r0..r1` (sequences `s0..s1`) of `whole` as a batch of their own over
    /// `logits` (those rows' values): the case's per-row inputs and `temps` cut to them.
    pub fn rows_of<'a>(
        &'a self,
        whole: wgpu_policy_loss::HostBatch<'a>,
        logits: wgpu_policy_loss::HostLogits<'a>,
        (r0, r1, s0, s1): (usize, usize, usize, usize),
        temps: Option<&'a [f32]>,
    ) -> wgpu_policy_loss::HostBatch<'a> {
        wgpu_policy_loss::HostBatch {
            logits,
            targets: &self.targets[r0..r1],
            mask: &self.mask[r0..r1],
            advantages: &self.adv_seq[s0..s1],
            old_logprobs: Some(&self.old[r0..r1]),
            ref_logprobs: Some(&self.refp[r0..r1]),
            temperatures: temps.map(|t| &t[r0..r1]),
            ..whole
        }
    }

    /// The given kept sets as the API takes them.
    pub fn kept(&self) -> Option<wgpu_policy_loss::reference::sampler::KeptSets<'_>> {
        self.keep
            .as_ref()
            .map(|(offsets, ids)| wgpu_policy_loss::reference::sampler::KeptSets { offsets, ids })
    }

    /// The f64 reference of this case over the stored logits `x` (exact values of the
    /// dtype the GPU read), with the inputs `using` selects and, when `rollout`, the
    /// sampler's log-probs.
    pub fn reference(
        &self,
        cfg: &wgpu_policy_loss::LossConfig,
        x: &[f64],
        using: Use,
        rollout: bool,
    ) -> wgpu_policy_loss::reference::LossOutput {
        let temps: Option<Vec<f64>> = self
            .temps
            .as_ref()
            .map(|t| t.iter().map(|&v| v as f64).collect());
        self.on_reference(x, using, rollout, |b, roll| {
            let sampler = wgpu_policy_loss::reference::sampler::SamplerBatch {
                sampler: Default::default(),
                temperatures: temps.as_deref(),
                keep: self.kept(),
            };
            wgpu_policy_loss::reference::policy_loss_sampled(cfg, b, roll, &sampler)
        })
        .unwrap()
    }

    /// [`Self::reference`]'s gradient's sensitivity to the log-prob's f32 error
    /// (`reference::compare::grad_sensitivity`; none where the case has per-token
    /// temperatures, which it does not take).
    pub fn sensitivity(
        &self,
        cfg: &wgpu_policy_loss::LossConfig,
        x: &[f64],
        using: Use,
        rollout: bool,
    ) -> Vec<f64> {
        if self.temps.is_some() {
            return vec![0.0; x.len()];
        }
        self.on_reference(x, using, rollout, |b, roll| {
            wgpu_policy_loss::reference::compare::grad_sensitivity(cfg, b, roll)
        })
        .unwrap()
    }

    fn on_reference<T>(
        &self,
        x: &[f64],
        using: Use,
        rollout: bool,
        f: impl FnOnce(
            &wgpu_policy_loss::reference::Batch<'_>,
            Option<&[f64]>,
        ) -> wgpu_policy_loss::Result<T>,
    ) -> wgpu_policy_loss::Result<T> {
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let adv = f64s(if using.per_token_adv {
            &self.adv_tok
        } else {
            &self.adv_seq
        });
        let (mask, old, refp, roll) = (
            f64s(&self.mask),
            f64s(&self.old),
            f64s(&self.refp),
            f64s(&self.rollout),
        );
        f(
            &wgpu_policy_loss::reference::Batch {
                logits: x,
                vocab: self.vocab as usize,
                rows_per_seq: self.rows_per_seq as usize,
                targets: &self.targets,
                mask: &mask,
                advantages: &adv,
                old_logp: using.old.then_some(&old[..]),
                ref_logp: using.refp.then_some(&refp[..]),
            },
            rollout.then_some(&roll[..]),
        )
    }

    /// The host batch of this case over `logits`, with the inputs `using` selects.
    pub fn batch<'a>(
        &'a self,
        logits: wgpu_policy_loss::HostLogits<'a>,
        using: Use,
    ) -> wgpu_policy_loss::HostBatch<'a> {
        wgpu_policy_loss::HostBatch {
            kept: self.kept(),
            temperatures: self.temps.as_deref(),
            logits,
            vocab: self.vocab,
            rows_per_seq: Some(self.rows_per_seq),
            targets: &self.targets,
            mask: &self.mask,
            advantages: if using.per_token_adv {
                &self.adv_tok
            } else {
                &self.adv_seq
            },
            old_logprobs: using.old.then_some(&self.old[..]),
            ref_logprobs: using.refp.then_some(&self.refp[..]),
        }
    }
}

/// Every optional input.
pub const ALL_INPUTS: Use = Use {
    per_token_adv: false,
    old: true,
    refp: true,
};

/// Which optional inputs a run passes.
#[derive(Clone, Copy, Debug)]
pub struct Use {
    pub per_token_adv: bool,
    pub old: bool,
    pub refp: bool,
}

/// Runs the host API on `case` and compares loss, metrics, log-probs, entropies and
/// the gradient with the f64 reference. Returns (max loss error, the gradient's largest
/// error as a share of its bound).
pub fn check_loss(
    ctx: &Context,
    cfg: &wgpu_policy_loss::LossConfig,
    case: &LossCase,
    dtype: DType,
    grad_dtype: Option<DType>,
    using: Use,
) -> (f64, f64) {
    check_loss_with(ctx, cfg, case, dtype, grad_dtype, using, false)
}

/// [`check_loss`], with the case's sampler log-probs when `rollout` (the configuration
/// decides whether they are used).
pub fn check_loss_with(
    ctx: &Context,
    cfg: &wgpu_policy_loss::LossConfig,
    case: &LossCase,
    dtype: DType,
    grad_dtype: Option<DType>,
    using: Use,
    rollout: bool,
) -> (f64, f64) {
    let logits = Logits::from_f32(dtype, &case.logits);
    let batch = case.batch(logits.host(), using);
    let what = format!("{} {dtype}→{grad_dtype:?} {cfg:?} {using:?}", name(ctx));
    let part = wgpu_policy_loss::HostPart {
        batch,
        rollout_logprobs: rollout.then_some(&case.rollout[..]),
    };
    let got = ctx
        .policy_loss_parts(cfg, &[part], grad_dtype)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = case.reference(cfg, &logits.values(), using, rollout);
    // the gradient's comparison below zips it with the reference's: one asked for must
    // come, whole
    assert_eq!(
        got.grad.as_ref().map(|g| (g.dtype, g.bytes.len())),
        grad_dtype.map(|d| (d, want.grad.len() * d.size() as usize)),
        "{what}: the gradient returned (dtype, bytes)"
    );

    let tol = |w: f64| 2e-5 + 2e-5 * w.abs();
    let m = &got.metrics;
    let loss_err = (m.loss as f64 - want.loss).abs();
    for (label, g, w) in [
        ("loss", m.loss, want.loss),
        ("pg_clipfrac", m.pg_clipfrac, want.metrics.pg_clipfrac),
        (
            "pg_clipfrac_lower",
            m.pg_clipfrac_lower,
            want.metrics.pg_clipfrac_lower,
        ),
        ("ppo_kl", m.ppo_kl, want.metrics.ppo_kl),
        ("kl", m.kl, want.metrics.kl),
        ("entropy_mean", m.entropy_mean, want.metrics.entropy_mean),
        (
            "nonfinite_rows",
            m.nonfinite_rows,
            want.metrics.nonfinite_rows,
        ),
        (
            "cov_selected_frac",
            m.cov_selected_frac,
            want.metrics.cov_selected_frac,
        ),
        (
            "entropy_mask_frac",
            m.entropy_mask_frac,
            want.metrics.entropy_mask_frac,
        ),
        (
            "rollout_is_mean",
            m.rollout_is_mean,
            want.metrics.rollout_is_mean,
        ),
        (
            "rollout_is_min",
            m.rollout_is_min,
            want.metrics.rollout_is_min,
        ),
        (
            "rollout_is_max",
            m.rollout_is_max,
            want.metrics.rollout_is_max,
        ),
        (
            "rollout_is_clipfrac",
            m.rollout_is_clipfrac,
            want.metrics.rollout_is_clipfrac,
        ),
        (
            "rollout_logp_diff_max",
            m.rollout_logp_diff_max,
            want.metrics.rollout_logp_diff_max,
        ),
        (
            "off_policy_mask_frac",
            m.off_policy_mask_frac,
            want.metrics.off_policy_mask_frac,
        ),
        (
            "vespo_phi_seq_mean",
            m.vespo_phi_seq_mean,
            want.metrics.vespo_phi_seq_mean,
        ),
    ] {
        if let Err(e) = close(g, w, tol(w)) {
            panic!("{what}: {label}: {e}");
        }
    }
    for r in 0..case.rows() {
        if case.mask[r] > 0.0 {
            close(
                got.logprobs[r],
                want.logp[r],
                tolerance(want.logp[r].abs() + 10.0),
            )
            .unwrap_or_else(|e| panic!("{what}: logprobs[{r}]: {e}"));
            close(got.entropy[r], want.entropy[r], tolerance(10.0))
                .unwrap_or_else(|e| panic!("{what}: entropy[{r}]: {e}"));
            close(got.lse[r], want.lse[r], tolerance(want.lse[r].abs() + 10.0))
                .unwrap_or_else(|e| panic!("{what}: lse[{r}]: {e}"));
        }
    }
    let mut grad_err = 0.0;
    if let Some(g) = &got.grad {
        let gv = g.to_f32();
        // the library's one rule (reference::compare): relative to each element, plus
        // a small share of the largest
        let sensitivity = cached_sensitivity(case, cfg, &logits.values(), using, rollout);
        let c = compare::logits_grad_with(&gv, &want.grad, g.dtype.into(), &sensitivity)
            .unwrap_or_else(|e| {
                let i = e.element().map_or(0, |e| e.index);
                panic!(
                    "{what}: grad {e} (vocab {}; its sensitivity {:.3e}, max|g_ref| {:.3e})",
                    case.vocab,
                    sensitivity.get(i).copied().unwrap_or(0.0),
                    compare::largest_finite(&want.grad)
                )
            });
        grad_err = c.share();
        // rows outside the loss have exactly zero gradient
        for r in 0..case.rows() {
            if case.mask[r] <= 0.0 {
                let row = &gv[r * case.vocab as usize..(r + 1) * case.vocab as usize];
                assert!(
                    row.iter().all(|&v| v == 0.0),
                    "{what}: masked row {r} has a gradient"
                );
            }
        }
    }
    (loss_err, grad_err)
}

/// [`LossCase::sensitivity`], once per case, configuration and logits: the tests run
/// each on every adapter, and the reference's four extra runs are what a long batch's
/// check costs.
fn cached_sensitivity(
    case: &LossCase,
    cfg: &LossConfig,
    x: &[f64],
    using: Use,
    rollout: bool,
) -> std::sync::Arc<Vec<f64>> {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::sync::{Arc, Mutex};
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<Vec<f64>>>>> = OnceLock::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{cfg:?} {using:?} {rollout} {}", case.vocab).hash(&mut h);
    x.iter().for_each(|v| v.to_bits().hash(&mut h));
    for v in [
        &case.mask,
        &case.adv_seq,
        &case.adv_tok,
        &case.old,
        &case.refp,
        &case.rollout,
    ] {
        v.iter().for_each(|x| x.to_bits().hash(&mut h));
    }
    case.targets.hash(&mut h);
    case.temps
        .iter()
        .flatten()
        .for_each(|x| x.to_bits().hash(&mut h));
    let key = h.finish();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().unwrap().get(&key) {
        return s.clone();
    }
    let s = Arc::new(case.sensitivity(cfg, x, using, rollout));
    cache.lock().unwrap().insert(key, s.clone());
    s
}

/// Records a policy-loss call into a new encoder, submits it and reads back the
/// metrics and the first bytes of each of `extra`.
pub fn record_and_read(
    ctx: &Context,
    config: wgpu_policy_loss::LossConfig,
    inputs: &wgpu_policy_loss::LossInputs<'_>,
    gradient: wgpu_policy_loss::Gradient<'_>,
    extra: &[(&wgpu_policy_loss::wgpu::Buffer, u64)],
) -> (wgpu_policy_loss::Metrics, Vec<Vec<u8>>) {
    use wgpu_policy_loss::{LossBuffers, Metrics, PolicyLoss};
    let out = LossBuffers::new(ctx, inputs.logits.rows);
    let loss = PolicyLoss::new(ctx, config).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record(&mut enc, inputs, gradient, &out.outputs())
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    let mut list = vec![(&out.metrics, Metrics::LEN as u64 * 4)];
    list.extend_from_slice(extra);
    let mut got = ctx.read_back(enc, &list).unwrap();
    let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got.remove(0)));
    (metrics, got)
}

/// A configuration on the axes the tests sweep: `extras` = (temperature τ, KL coefficient
/// β, entropy coefficient γ, dual-clip c), with an asymmetric clip (ε_high = 0.28).
pub fn loss_config(
    mode: PolicyLossMode,
    agg: LossAggMode,
    kl: KlEstimator,
    (tau, beta, gamma, dual): (f32, f32, f32, Option<f32>),
) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: agg,
        kl_loss_type: kl,
        kl_coef: beta,
        entropy_coeff: gamma,
        temperature: tau,
        clip_ratio_c: dual,
        clip_ratio_high: 0.28,
        // dro requires its β_D; the other modes ignore it
        dro_beta: (mode == PolicyLossMode::Dro).then_some(0.3),
        ..LossConfig::default()
    }
}

/// The bits of `v`, for comparisons that must be exact (NaN included).
pub fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The bits of the loss and of the metrics that are floats.
pub fn metric_bits(m: &wgpu_policy_loss::Metrics) -> Vec<u32> {
    f32_bits(&[
        m.loss,
        m.pg_clipfrac,
        m.pg_clipfrac_lower,
        m.ppo_kl,
        m.kl,
        m.entropy_mean,
        m.nonfinite_rows,
        m.mask_sum,
        m.cov_selected_frac,
        m.entropy_mask_frac,
        m.off_policy_mask_frac,
        m.vespo_phi_seq_mean,
    ])
}

/// Whether two host results have the same bits: metrics, per-row outputs, gradient.
pub fn same_bits(a: &wgpu_policy_loss::HostLoss, b: &wgpu_policy_loss::HostLoss) -> bool {
    metric_bits(&a.metrics) == metric_bits(&b.metrics)
        && f32_bits(&a.logprobs) == f32_bits(&b.logprobs)
        && f32_bits(&a.entropy) == f32_bits(&b.entropy)
        && a.grad == b.grad
}

/// Every aggregation mode, and token-mean with the global normaliser `global`.
pub fn aggregations(global: f32) -> Vec<(LossAggMode, Option<f32>)> {
    let mut out: Vec<_> = LossAggMode::ALL.into_iter().map(|a| (a, None)).collect();
    out.push((LossAggMode::TokenMean, Some(global)));
    out
}

/// The binary cargo built beside the tests, or `WGPU_POLICY_LOSS_BIN` where the tests
/// run away from the build tree (prebuilt, by scripts/gpu-report.sh).
#[cfg(feature = "cli")]
pub fn bin() -> Command {
    match std::env::var_os("WGPU_POLICY_LOSS_BIN") {
        Some(path) => Command::new(path),
        None => Command::new(env!("CARGO_BIN_EXE_wgpu-policy-loss")),
    }
}

/// `eval --input IN --output OUT` plus `flags`.
#[cfg(feature = "cli")]
pub fn eval(input: &Path, output: &Path, flags: &[&str]) -> Output {
    bin()
        .arg("eval")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(flags)
        .output()
        .unwrap()
}

/// A path in this test process's own temporary folder for `tag`'s files.
pub fn tmp_path(tag: &str, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A slice's bytes, as a tensor file holds them.
pub fn pod_bytes<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice::<T, u8>(v).to_vec()
}

/// An output file's f32 tensor `name`.
pub fn tensor_f32s(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("no {name}: {e}"));
    bytemuck::pod_collect_to_vec(t.data())
}

/// `eval` with `flags` on `input`, which must succeed: the output file's bytes.
pub fn eval_ok(input: &Path, output: &Path, flags: &[&str]) -> Vec<u8> {
    let out = eval(input, output, flags);
    assert!(
        out.status.success(),
        "eval {flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(output).unwrap()
}

/// `eval` with `flags` on `input` fails as the error tables of docs/MATH.md say ("Bad
/// input", "The eval command"): not 0, not 101 (a panic), no panic message, and the
/// error names `named`.
pub fn eval_fails_naming(input: &Path, flags: &[&str], named: &str) {
    let never = std::env::temp_dir().join(format!(
        "wgpu-policy-loss-never-{}.safetensors",
        std::process::id()
    ));
    let out = eval(input, &never, flags);
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => panic!("eval {flags:?} was accepted"),
        Some(101) => panic!("eval {flags:?} exited 101 (a panic): {err}"),
        None => panic!("eval {flags:?} died of a signal: {err}"),
        Some(_) => {}
    }
    assert!(!err.contains("panicked"), "{flags:?}: {err}");
    assert!(err.contains(named), "{flags:?} should name {named}: {err}");
}

/// A configuration on which the 2026 options are tried: KL and entropy terms, an
/// asymmetric clip, DRO's β_D, a temperature.
pub fn base_2026(mode: PolicyLossMode) -> LossConfig {
    LossConfig {
        mode,
        kl_loss_type: KlEstimator::K3,
        kl_coef: 0.1,
        entropy_coeff: 0.01,
        clip_ratio_high: 0.28,
        dro_beta: Some(0.3),
        temperature: 0.9,
        ..LossConfig::default()
    }
}

/// The options of 2026 (docs/MATH.md, "Ratio options" to "The off-policy sequence
/// mask"), each over every mode that takes it (those LossConfig::validate accepts):
/// (label, configuration).
pub fn options_2026() -> Vec<(String, LossConfig)> {
    use wgpu_policy_loss::{ImportanceSamplingLevel, RolloutCorrection, RolloutLevel, RolloutMode};
    let seq = ImportanceSamplingLevel::Sequence;
    let token_tis = Some(RolloutCorrection::new(
        RolloutLevel::Token,
        RolloutMode::Truncate,
    ));
    let geo_mis = Some(RolloutCorrection::new(
        RolloutLevel::Geometric,
        RolloutMode::Mask,
    ));
    type Opt = Box<dyn Fn(LossConfig) -> LossConfig>;
    let options: Vec<(&str, Opt)> = vec![
        ("plain", Box::new(|c| c)),
        (
            "delta",
            Box::new(|c| LossConfig {
                delta: Some(1.5),
                ..c
            }),
        ),
        (
            "sequence",
            Box::new(move |c| LossConfig {
                importance_sampling_level: seq,
                ..c
            }),
        ),
        (
            "sequence+delta",
            Box::new(move |c| LossConfig {
                importance_sampling_level: seq,
                delta: Some(1.4),
                ..c
            }),
        ),
        (
            "sequence+dual",
            Box::new(move |c| LossConfig {
                importance_sampling_level: seq,
                clip_ratio_c: Some(3.0),
                ..c
            }),
        ),
        (
            "off-policy",
            Box::new(|c| LossConfig {
                off_policy_mask_threshold: Some(0.05),
                ..c
            }),
        ),
        (
            "bias-kl",
            Box::new(|c| LossConfig {
                use_bias_correction_kl: true,
                ..c
            }),
        ),
        (
            "bias-kl+sequence",
            Box::new(move |c| LossConfig {
                use_bias_correction_kl: true,
                importance_sampling_level: seq,
                ..c
            }),
        ),
        (
            "k3+ token-sum",
            Box::new(|c| LossConfig {
                kl_loss_type: KlEstimator::K3Plus,
                loss_agg_mode: LossAggMode::TokenSum,
                ..c
            }),
        ),
        (
            "abs seq-mean",
            Box::new(|c| LossConfig {
                kl_loss_type: KlEstimator::Abs,
                loss_agg_mode: LossAggMode::SeqMeanTokenMean,
                ..c
            }),
        ),
        (
            "tis+off-policy",
            Box::new(move |c| LossConfig {
                rollout_correction: token_tis,
                off_policy_mask_threshold: Some(0.0),
                ..c
            }),
        ),
        (
            "geometric-mis",
            Box::new(move |c| LossConfig {
                rollout_correction: geo_mis,
                ..c
            }),
        ),
        (
            "entropy-mask+sequence",
            Box::new(move |c| LossConfig {
                top_entropy_quantile: Some(0.6),
                top_entropy_renormalize: true,
                importance_sampling_level: seq,
                ..c
            }),
        ),
    ];
    let mut out = Vec::new();
    for mode in PolicyLossMode::ALL {
        for (label, opt) in &options {
            let cfg = opt(base_2026(mode));
            if cfg.validate().is_ok() && (*label == "plain" || cfg != base_2026(mode)) {
                out.push((format!("{} {label}", mode.name()), cfg));
            }
        }
        // the loops over these configurations try every mode
        let plain = format!("{} plain", mode.name());
        assert!(
            out.iter().any(|(l, _)| *l == plain),
            "{plain}: base_2026 is invalid, so the 2026 matrix skips {mode:?}"
        );
    }
    out
}

/// `Err` naming `want` (an invalid argument), or a panic saying what came instead.
pub fn assert_arg<T: std::fmt::Debug>(r: wgpu_policy_loss::Result<T>, want: &str) {
    match r {
        Err(wgpu_policy_loss::Error::InvalidArgument { arg, .. }) if arg == want => {}
        other => panic!("expected an error naming `{want}`, got {other:?}"),
    }
}
