//! docs/MATH.md#bad-input for the per-row inputs other than the logits: a mask that is
//! negative, NaN or ±inf on any row, and a NaN or ±inf advantage, old, ref or rollout
//! log-prob on a masked-in row that the call reads.
//!
//! - The host API rejects each one, naming the tensor and the first bad row.
//! - The device API cannot look without a readback: a NaN (or a bad mask) reaches that
//!   row's loss term and gradient, ±inf log-probs keep the formulas' clamps, and the
//!   metrics count the rows, so that `Metrics::check` gives the host's error.
//! - The f64 reference agrees on both, and junk on masked-out rows changes no bit.
//!
//! Each input × value × mode × every option that reads it, on every adapter and path.

mod common;

use common::*;
use wgpu_policy_loss::reference::compare;
use wgpu_policy_loss::wgpu;
use wgpu_policy_loss::{
    reference, Advantages, Context, DType, Error, F32View, GradView, Gradient, HostBatch, HostPart,
    InvalidInput, KlEstimator, LogitsView, LossAggMode, LossBuffers, LossConfig, LossInputs,
    LossPart, Metrics, PolicyLoss, PolicyLossMode, RolloutCorrection, RolloutLevel, RolloutMode,
    RowInput, TargetsView,
};

/// The batch: 3 sequences of 5 rows, V = 41. Sequence 1 and row 10 are masked
/// out; row 1 weighs 0.5.
fn case() -> LossCase {
    LossCase::new(18, 3, 5, 41)
}

/// The masked-in row that gets the bad value (sequence 2, whose first masked-in row is
/// 11), and a masked-out row for junk.
const BAD_ROW: usize = 12;
const MASKED_OUT: usize = 7;

/// The per-row inputs of one call, owned, so that one value can be broken.
#[derive(Clone)]
struct Data {
    mask: Vec<f32>,
    adv: Vec<f32>,
    per_token: bool,
    old: Vec<f32>,
    refp: Vec<f32>,
    rollout: Vec<f32>,
    /// Per-row temperatures, once a test sets one (1 on every other row).
    temps: Option<Vec<f32>>,
}

impl Data {
    fn of(case: &LossCase, per_token: bool) -> Self {
        Data {
            mask: case.mask.clone(),
            adv: if per_token {
                case.adv_tok.clone()
            } else {
                case.adv_seq.clone()
            },
            per_token,
            old: case.old.clone(),
            refp: case.refp.clone(),
            rollout: case.rollout.clone(),
            temps: None,
        }
    }

    /// `value` into `input` at `row` (the row's sequence, for per-sequence advantages).
    fn with(mut self, input: RowInput, row: usize, value: f32, rows_per_seq: usize) -> Self {
        let adv_at = if self.per_token {
            row
        } else {
            row / rows_per_seq
        };
        match input {
            RowInput::Mask => self.mask[row] = value,
            RowInput::Advantages => self.adv[adv_at] = value,
            RowInput::OldLogprobs => self.old[row] = value,
            RowInput::RefLogprobs => self.refp[row] = value,
            RowInput::RolloutLogprobs => self.rollout[row] = value,
            // τ = 1 elsewhere: the plain loss's numbers (a bad temperature on a read
            // row: tests/sampler.rs, as the reference rejects it outright)
            RowInput::Temperatures => {
                let n = self.mask.len();
                self.temps.get_or_insert_with(|| vec![1.0; n])[row] = value
            }
            // the log-prob primitive's (tests/logprobs.rs)
            RowInput::UpstreamLogprobs | RowInput::UpstreamEntropy | RowInput::UpstreamLse => {
                panic!("{input:?} is not an input of the loss")
            }
            // membership in a kept set, not a value (tests/kept.rs)
            RowInput::Targets => panic!("{input:?} is tested with kept sets"),
        }
        self
    }

    fn host<'a>(&'a self, case: &'a LossCase, logits: &'a Logits) -> HostPart<'a> {
        HostBatch {
            kept: None,
            logits: logits.host(),
            vocab: case.vocab,
            rows_per_seq: Some(case.rows_per_seq),
            targets: &case.targets,
            mask: &self.mask,
            advantages: &self.adv,
            old_logprobs: Some(&self.old),
            ref_logprobs: Some(&self.refp),
            temperatures: self.temps.as_deref(),
        }
        .with_rollout_logprobs(&self.rollout)
    }

    /// The reference, and its gradient's sensitivity to the log-prob's f32 error
    /// (`reference::compare::grad_sensitivity`).
    fn reference(
        &self,
        cfg: &LossConfig,
        case: &LossCase,
        logits: &Logits,
    ) -> (reference::LossOutput, Vec<f64>) {
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (x, mask, adv) = (logits.values(), f(&self.mask), f(&self.adv));
        let (old, refp, rollout) = (f(&self.old), f(&self.refp), f(&self.rollout));
        let batch = reference::Batch {
            logits: &x,
            vocab: case.vocab as usize,
            rows_per_seq: case.rows_per_seq as usize,
            targets: &case.targets,
            mask: &mask,
            advantages: &adv,
            old_logp: Some(&old),
            ref_logp: Some(&refp),
        };
        let want = reference::policy_loss_with(cfg, &batch, Some(&rollout)).unwrap();
        let s = compare::grad_sensitivity(cfg, &batch, Some(&rollout)).unwrap();
        (want, s)
    }
}

/// Everything a device call gives back, read back.
struct DeviceOut {
    metrics: Metrics,
    grad: Vec<f32>,
}

/// Where a device call's gradient goes.
#[derive(Clone, Copy, Debug)]
enum Grad {
    Into(DType),
    InPlace,
}

/// One part of a device call: sequences `[s0, s1)` of a case, uploaded as they are.
struct PartBufs {
    rows: u32,
    /// The logits and their bytes (the buffer is padded to 4).
    x: (wgpu::Buffer, u64),
    y: wgpu::Buffer,
    m: wgpu::Buffer,
    a: wgpu::Buffer,
    old: wgpu::Buffer,
    refp: wgpu::Buffer,
    roll: wgpu::Buffer,
    temps: Option<wgpu::Buffer>,
    grad: (wgpu::Buffer, u64),
}

impl PartBufs {
    fn upload(
        ctx: &Context,
        case: &LossCase,
        logits: &Logits,
        data: &Data,
        grad: Grad,
        (s0, s1): (usize, usize),
    ) -> Self {
        let (v, rps) = (case.vocab as usize, case.rows_per_seq as usize);
        let (r0, r1) = (s0 * rps, s1 * rps);
        let elem = logits.dtype.size() as usize;
        let f32s = |label, x: &[f32]| ctx.upload(label, bytemuck::cast_slice(x));
        let adv = match data.per_token {
            true => &data.adv[r0..r1],
            false => &data.adv[s0..s1],
        };
        let g_bytes = match grad {
            Grad::Into(d) => ((r1 - r0) * v) as u64 * d.size(),
            Grad::InPlace => 0,
        };
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        PartBufs {
            rows: (r1 - r0) as u32,
            x: (
                ctx.upload("x", &logits.bytes()[r0 * v * elem..r1 * v * elem]),
                ((r1 - r0) * v * elem) as u64,
            ),
            y: ctx.upload("y", bytemuck::cast_slice(&case.targets[r0..r1])),
            m: f32s("mask", &data.mask[r0..r1]),
            a: f32s("adv", adv),
            old: f32s("old", &data.old[r0..r1]),
            refp: f32s("ref", &data.refp[r0..r1]),
            roll: f32s("rollout", &data.rollout[r0..r1]),
            temps: data
                .temps
                .as_ref()
                .map(|t| f32s("temperatures", &t[r0..r1])),
            grad: (
                ctx.buffer("grad", g_bytes.div_ceil(4).max(1) * 4, usage),
                g_bytes,
            ),
        }
    }

    fn part(&self, case: &LossCase, dtype: DType, per_token: bool, grad: Grad) -> LossPart<'_> {
        let rps = case.rows_per_seq;
        let lv = LogitsView::new(&self.x.0, dtype, self.rows, case.vocab)
            .with_sequences(rps, rps as u64 * case.vocab as u64);
        let adv = F32View::new(&self.a);
        let inputs = LossInputs::new(
            lv,
            TargetsView::new(&self.y),
            F32View::new(&self.m),
            match per_token {
                true => Advantages::PerToken(adv),
                false => Advantages::PerSequence(adv),
            },
        )
        .with_old_logprobs(F32View::new(&self.old))
        .with_ref_logprobs(F32View::new(&self.refp));
        let inputs = match &self.temps {
            Some(t) => inputs.with_temperatures(F32View::new(t)),
            None => inputs,
        };
        let gradient = match grad {
            Grad::Into(d) => Gradient::Into(GradView::new(&self.grad.0, d, case.vocab)),
            Grad::InPlace => Gradient::InPlace,
        };
        LossPart::new(inputs, gradient).with_rollout_logprobs(F32View::new(&self.roll))
    }

    /// The buffer and bytes the gradient went to.
    fn gradient(&self, grad: Grad) -> (&wgpu::Buffer, u64) {
        match grad {
            Grad::Into(_) => (&self.grad.0, self.grad.1),
            Grad::InPlace => (&self.x.0, self.x.1),
        }
    }
}

/// The device API on `data`, uploaded as it is (no host check), in parts split before
/// the sequences `cuts`.
fn device(
    ctx: &Context,
    cfg: &LossConfig,
    case: &LossCase,
    logits: &Logits,
    data: &Data,
    grad: Grad,
    cuts: &[usize],
) -> DeviceOut {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(case.seqs as usize);
    let bufs: Vec<PartBufs> = bounds
        .windows(2)
        .map(|w| PartBufs::upload(ctx, case, logits, data, grad, (w[0], w[1])))
        .collect();
    let parts: Vec<LossPart<'_>> = bufs
        .iter()
        .map(|b| b.part(case, logits.dtype, data.per_token, grad))
        .collect();
    let out = LossBuffers::new(ctx, case.rows() as u32);
    let loss = PolicyLoss::new(ctx, *cfg).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record_parts(&mut enc, &parts, &out.outputs())
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    let mut list = vec![(&out.metrics, Metrics::LEN as u64 * 4)];
    list.extend(bufs.iter().map(|b| b.gradient(grad)));
    let got = ctx.read_back(enc, &list).unwrap();
    let dtype = match grad {
        Grad::Into(d) => d,
        Grad::InPlace => logits.dtype,
    };
    DeviceOut {
        metrics: Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0])),
        grad: wgpu_policy_loss::HostGrad {
            dtype,
            bytes: got[1..].concat(),
        }
        .to_f32(),
    }
}

fn base(mode: PolicyLossMode) -> LossConfig {
    LossConfig {
        mode,
        kl_coef: 0.1,
        kl_loss_type: KlEstimator::K3,
        entropy_coeff: 0.01,
        rollout_correction: Some(RolloutCorrection::new(
            RolloutLevel::Token,
            RolloutMode::Truncate,
        )),
        dro_beta: Some(0.3),
        ..LossConfig::default()
    }
}

/// Every mode with every option that reads `input`: the issue's `--kl-loss-type
/// low_var_kl --kl-coef 0.1 --rollout-is token` for all, then the other KL estimators
/// (ref), every rollout level and mode and the off-policy mask (rollout), the ratio
/// without the rollout correction (old), and every aggregation (mask, advantages).
fn configs(input: RowInput) -> Vec<LossConfig> {
    let mut out = Vec::new();
    for mode in PolicyLossMode::ALL {
        let b = base(mode);
        out.push(b);
        match input {
            RowInput::RefLogprobs => {
                for kl_loss_type in [KlEstimator::K1, KlEstimator::K2] {
                    out.push(LossConfig { kl_loss_type, ..b });
                }
            }
            RowInput::RolloutLogprobs => {
                for level in RolloutLevel::ALL {
                    for rm in RolloutMode::ALL {
                        if (level, rm) != (RolloutLevel::Token, RolloutMode::Truncate) {
                            let rc = RolloutCorrection::new(level, rm);
                            out.push(LossConfig {
                                rollout_correction: Some(rc),
                                ..b
                            });
                        }
                    }
                }
                // the off-policy mask reads them too (its σ), without the correction
                out.push(LossConfig {
                    rollout_correction: None,
                    off_policy_mask_threshold: Some(0.1),
                    ..b
                });
            }
            RowInput::OldLogprobs => out.push(LossConfig {
                rollout_correction: None,
                ..b
            }),
            RowInput::Temperatures
            | RowInput::UpstreamLogprobs
            | RowInput::UpstreamEntropy
            | RowInput::UpstreamLse
            | RowInput::Targets => {}
            RowInput::Mask | RowInput::Advantages => {
                for loss_agg_mode in &LossAggMode::ALL[1..] {
                    out.push(LossConfig {
                        loss_agg_mode: *loss_agg_mode,
                        ..b
                    });
                }
            }
        }
    }
    // the combinations LossConfig accepts (vespo's rollout correction is per token)
    out.retain(|c| c.validate().is_ok());
    for mode in PolicyLossMode::ALL {
        assert!(
            out.iter().any(|c| c.mode == mode),
            "{input:?}: no configuration of {mode:?} is valid, so none is tried"
        );
    }
    out
}

/// The values each input is broken with.
fn bad_values(input: RowInput) -> Vec<f32> {
    let mut v = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    if input == RowInput::Mask {
        v.push(-1.0);
    }
    v
}

/// Each input and advantage layout, with whether it is per token.
fn inputs() -> Vec<(RowInput, bool)> {
    RowInput::ALL
        .iter()
        .flat_map(|&i| match i {
            RowInput::Advantages => vec![(i, false), (i, true)],
            // tests/sampler.rs (the reference rejects a bad temperature outright), and
            // the primitive's inputs (tests/logprobs.rs)
            RowInput::Temperatures
            | RowInput::UpstreamLogprobs
            | RowInput::UpstreamEntropy
            | RowInput::UpstreamLse
            | RowInput::Targets => vec![],
            _ => vec![(i, false)],
        })
        .collect()
}

/// A value NaN propagates from (a bad mask always does).
fn poisons(input: RowInput, value: f32) -> bool {
    value.is_nan() || input == RowInput::Mask
}

/// The device's results agree with the reference: the loss (NaN, ±inf or close), the
/// gradient by the library's rule (`reference::compare`, with the reference's
/// sensitivity to the log-prob's error): NaN where the reference's is
/// (docs/MATH.md#bad-input: a NaN input makes its row's gradient NaN), non-finite where
/// it is ±Inf (an infinite advantage), within the bound everywhere else.
fn agrees(
    what: &str,
    got: &DeviceOut,
    (want, sensitivity): (&reference::LossOutput, &[f64]),
    v: usize,
    grad: DType,
) {
    close(got.metrics.loss, want.loss, 2e-5 + 2e-5 * want.loss.abs())
        .unwrap_or_else(|e| panic!("{what}: loss: {e}"));
    compare::logits_grad_with(&got.grad, &want.grad, grad.into(), sensitivity)
        .unwrap_or_else(|e| panic!("{what}: grad {e} (vocab {v})"));
}

/// The error a bad value at `row` of `input` must give.
fn expected(input: RowInput, row: usize, value: f32) -> InvalidInput {
    InvalidInput {
        tensor: input,
        row: row as u32,
        value,
    }
}

/// The metrics name `want` (the value compared by its bits: it may be NaN).
fn assert_names(what: &str, m: &Metrics, want: InvalidInput) {
    let got = m
        .invalid_input
        .map(|b| (b.tensor, b.row, b.value.to_bits()));
    assert_eq!(
        got,
        Some((want.tensor, want.row, want.value.to_bits())),
        "{what}: {:?}",
        m.invalid_input
    );
}

fn assert_invalid(what: &str, e: &Error, want: InvalidInput) {
    match e {
        Error::InvalidInput { tensor, row, value }
            if *tensor == want.tensor
                && *row == want.row as usize
                && value.to_bits() == want.value.to_bits() => {}
        other => panic!("{what}: got {other}, want {want:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("`{}`", want.tensor.name()))
            && msg.contains(&format!("row {}", want.row)),
        "{what}: {msg}"
    );
}

/// The row the error names: the bad row, or for a per-sequence advantage the first
/// masked-in row of its sequence.
fn named_row(case: &LossCase, input: RowInput, per_token: bool) -> usize {
    if input != RowInput::Advantages || per_token {
        return BAD_ROW;
    }
    let rps = case.rows_per_seq as usize;
    let seq = BAD_ROW / rps;
    (seq * rps..(seq + 1) * rps)
        .find(|&r| case.mask[r] > 0.0)
        .unwrap()
}

/// One bad value in one input of the case, with a configuration that reads it.
struct BadCase {
    input: RowInput,
    value: f32,
    /// The row the error names.
    row: usize,
    data: Data,
    cfg: LossConfig,
    what: String,
}

/// Every input (advantages per sequence and per token) × bad value × mode × option
/// that reads it.
fn bad_cases(case: &LossCase) -> Vec<BadCase> {
    let rps = case.rows_per_seq as usize;
    let mut out = Vec::new();
    for (input, per_token) in inputs() {
        let row = named_row(case, input, per_token);
        for value in bad_values(input) {
            let data = Data::of(case, per_token).with(input, BAD_ROW, value, rps);
            for cfg in configs(input) {
                let layout = if per_token { " per token" } else { "" };
                out.push(BadCase {
                    input,
                    value,
                    row,
                    data: data.clone(),
                    cfg,
                    what: format!("{input:?}{layout} = {value} {cfg:?}"),
                });
            }
        }
    }
    out
}

#[test]
fn host_api_names_the_tensor_and_the_first_bad_row() {
    let case = case();
    let logits = Logits::from_f32(DType::F32, &case.logits);
    for ctx in natives() {
        for b in bad_cases(&case) {
            let what = format!("{} {}", name(ctx), b.what);
            let e = ctx
                .policy_loss_parts(&b.cfg, &[b.data.host(&case, &logits)], Some(DType::F32))
                .expect_err(&what);
            assert_invalid(&what, &e, expected(b.input, b.row, b.value));
        }
    }
}

/// Three bad values (ref, advantage, mask on rows 12, 13, 14): the first row is named.
fn three_bad(case: &LossCase) -> (Data, InvalidInput) {
    let rps = case.rows_per_seq as usize;
    let data = Data::of(case, true)
        .with(RowInput::RefLogprobs, BAD_ROW, f32::NAN, rps)
        .with(RowInput::Advantages, BAD_ROW + 1, f32::INFINITY, rps)
        .with(RowInput::Mask, BAD_ROW + 2, -2.0, rps);
    (data, expected(RowInput::RefLogprobs, BAD_ROW, f32::NAN))
}

/// The first bad row is named whatever the tensor, rows count over parts, and the
/// rollout log-probs are not read without the correction.
#[test]
fn host_api_first_row_over_parts() {
    let case = case();
    let rps = case.rows_per_seq as usize;
    let logits = Logits::from_f32(DType::F32, &case.logits);
    let (data, want) = three_bad(&case);
    let cfg = base(PolicyLossMode::PpoClip);
    let v = case.vocab as usize;
    for ctx in natives() {
        let whole = data.host(&case, &logits);
        let e = ctx.policy_loss(&cfg, &whole.batch, None).unwrap_err();
        assert_invalid("one part", &e, want);
        assert_invalid("HostPart::check", &whole.check(&cfg).unwrap_err(), want);
        // parts of sequences [0, 2) and [2, 3): row 12 is row 2 of the second part
        let b = whole.batch;
        let split = |r0: usize, r1: usize| HostPart {
            batch: HostBatch {
                kept: None,
                temperatures: None,
                logits: wgpu_policy_loss::HostLogits::F32(&logits.f32[r0 * v..r1 * v]),
                targets: &b.targets[r0..r1],
                mask: &b.mask[r0..r1],
                advantages: &b.advantages[r0..r1],
                old_logprobs: b.old_logprobs.map(|x| &x[r0..r1]),
                ref_logprobs: b.ref_logprobs.map(|x| &x[r0..r1]),
                ..b
            },
            rollout_logprobs: whole.rollout_logprobs.map(|x| &x[r0..r1]),
        };
        let parts = [split(0, 2 * rps), split(2 * rps, 3 * rps)];
        let e = ctx.policy_loss_parts(&cfg, &parts, None).unwrap_err();
        assert_invalid("two parts", &e, want);

        // junk sampler log-probs on a masked-in row are read only by the correction
        let junk = Data::of(&case, false).with(RowInput::RolloutLogprobs, BAD_ROW, f32::NAN, rps);
        let off = LossConfig {
            rollout_correction: None,
            ..cfg
        };
        ctx.policy_loss_parts(&off, &[junk.host(&case, &logits)], None)
            .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    }
}

/// The shard call checks too: every shard's partials, then shard 1's loss.
#[test]
fn host_api_shard_call() {
    let case = case();
    let logits = Logits::from_f32(DType::F32, &case.logits);
    let (data, want) = three_bad(&case);
    let cfg = base(PolicyLossMode::PpoClip);
    let v = case.vocab as usize;
    let shards = wgpu_policy_loss::VocabShards::even(case.vocab, 2).unwrap();
    let cols = |k: usize| -> Vec<f32> {
        let r = shards.range(k);
        logits
            .f32
            .chunks(v)
            .flat_map(|row| &row[r.start as usize..r.end as usize])
            .copied()
            .collect()
    };
    let whole = data.host(&case, &logits);
    for ctx in natives() {
        let mut gathered = Vec::new();
        for k in 0..2 {
            let x = cols(k);
            let h = wgpu_policy_loss::HostLogits::F32(&x);
            gathered.extend(
                ctx.shard_partials(&cfg, &shards, k, h, &case.targets)
                    .unwrap(),
            );
        }
        let x = cols(1);
        let part = HostPart {
            batch: HostBatch {
                kept: None,
                temperatures: None,
                logits: wgpu_policy_loss::HostLogits::F32(&x),
                vocab: shards.width(1),
                ..whole.batch
            },
            ..whole
        };
        let e = ctx
            .policy_loss_shard(&cfg, &shards, 1, part, &gathered, None)
            .unwrap_err();
        assert_invalid("shard 1", &e, want);
    }
}

/// The device API: NaN reaches the loss and the row's gradient, ±inf log-probs keep
/// the formulas' clamps, the rows are counted and `check` gives the host's error; the f64
/// reference agrees on all of it.
#[test]
fn device_api_propagates_and_counts() {
    let case = case();
    let v = case.vocab as usize;
    let logits = Logits::from_f32(DType::F32, &case.logits);
    for ctx in contexts() {
        for b in bad_cases(&case) {
            let what = format!("{} {}", name(ctx), b.what);
            let (cfg, data) = (&b.cfg, &b.data);
            let got = device(ctx, cfg, &case, &logits, data, Grad::Into(DType::F32), &[]);
            let (want, sensitivity) = data.reference(cfg, &case, &logits);
            let m = &got.metrics;
            assert_eq!(
                m.invalid_input_rows as f64, want.metrics.invalid_input_rows,
                "{what}: invalid_input_rows"
            );
            assert_eq!(
                want.metrics.first_invalid_input,
                Some((b.input, b.row)),
                "{what}: the reference's first bad row"
            );
            assert_names(&what, m, expected(b.input, b.row, b.value));
            let host = ctx
                .policy_loss_parts(cfg, &[data.host(&case, &logits)], None)
                .unwrap_err();
            let e = m.check(case.vocab).unwrap_err();
            assert_eq!(e.to_string(), host.to_string(), "{what}");
            if poisons(b.input, b.value) {
                assert!(m.loss.is_nan(), "{what}: loss {} from a NaN", m.loss);
                let g = &got.grad[BAD_ROW * v..(BAD_ROW + 1) * v];
                assert!(
                    g.iter().any(|x| x.is_nan()),
                    "{what}: a finite gradient row"
                );
                assert!(want.loss.is_nan(), "{what}: the reference's loss");
            }
            agrees(&what, &got, (&want, &sensitivity), v, DType::F32);
        }
    }
}

/// The same on every dtype and gradient placement, on both lane layouts: a NaN of each
/// input reaches the loss and the row's gradient, a +inf log-prob keeps the clamps.
#[test]
fn device_api_every_dtype_and_gradient() {
    let case = case();
    let rps = case.rows_per_seq as usize;
    let v = case.vocab as usize;
    let cfg = base(PolicyLossMode::PpoClip);
    for ctx in contexts() {
        for ctx in [ctx.clone(), ctx.with_lane_blocks(!ctx.lane_blocks())] {
            for dtype in [DType::F32, DType::F16, DType::Bf16] {
                let logits = Logits::from_f32(dtype, &case.logits);
                for grad in [
                    Grad::InPlace,
                    Grad::Into(DType::Bf16),
                    Grad::Into(DType::F16),
                ] {
                    for (input, per_token) in inputs() {
                        for value in [f32::NAN, f32::INFINITY] {
                            let data = Data::of(&case, per_token).with(input, BAD_ROW, value, rps);
                            let what =
                                format!("{} {dtype}→{grad:?} {input:?} = {value}", name(&ctx));
                            let got = device(&ctx, &cfg, &case, &logits, &data, grad, &[]);
                            assert!(got.metrics.invalid_input_rows >= 1.0, "{what}");
                            if poisons(input, value) {
                                assert!(got.metrics.loss.is_nan(), "{what}");
                                let g = &got.grad[BAD_ROW * v..(BAD_ROW + 1) * v];
                                assert!(g.iter().any(|x| x.is_nan()), "{what}: finite gradient");
                            } else if input != RowInput::Advantages {
                                let (want, sensitivity) = data.reference(&cfg, &case, &logits);
                                let stored = match grad {
                                    Grad::Into(d) => d,
                                    Grad::InPlace => dtype,
                                };
                                agrees(&what, &got, (&want, &sensitivity), v, stored);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Rows count over parts on the device too, and the masked-out rows' junk changes no
/// bit of any result.
#[test]
fn device_api_parts_and_masked_out_junk() {
    let case = case();
    let rps = case.rows_per_seq as usize;
    let logits = Logits::from_f32(DType::F32, &case.logits);
    for ctx in contexts() {
        for cfg in configs(RowInput::RolloutLogprobs) {
            let what = format!("{} {cfg:?}", name(ctx));
            let bad = Data::of(&case, false).with(RowInput::OldLogprobs, BAD_ROW, f32::NAN, rps);
            let got = device(
                ctx,
                &cfg,
                &case,
                &logits,
                &bad,
                Grad::Into(DType::F32),
                &[2],
            );
            let two = format!("{what}: two parts");
            assert_names(
                &two,
                &got.metrics,
                expected(RowInput::OldLogprobs, BAD_ROW, f32::NAN),
            );
            assert!(got.metrics.loss.is_nan(), "{what}");

            for per_token in [false, true] {
                let clean = Data::of(&case, per_token);
                let want = device(
                    ctx,
                    &cfg,
                    &case,
                    &logits,
                    &clean,
                    Grad::Into(DType::F32),
                    &[],
                );
                assert_eq!(want.metrics.invalid_input_rows, 0.0, "{what}");
                for input in &RowInput::ALL[1..6] {
                    for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30] {
                        let junk = clean.clone().with(*input, MASKED_OUT, value, rps);
                        let got = device(
                            ctx,
                            &cfg,
                            &case,
                            &logits,
                            &junk,
                            Grad::Into(DType::F32),
                            &[],
                        );
                        assert_eq!(
                            metric_bits(&got.metrics),
                            metric_bits(&want.metrics),
                            "{what}: {input:?} = {value} on a masked-out row"
                        );
                        assert_eq!(got.metrics.invalid_input_rows, 0.0, "{what}");
                        assert_eq!(f32_bits(&got.grad), f32_bits(&want.grad), "{what}");
                        ctx.policy_loss_parts(&cfg, &[junk.host(&case, &logits)], None)
                            .unwrap_or_else(|e| panic!("{what}: {input:?} masked out: {e}"));
                    }
                }
            }
        }
    }
}
