//! Property test of the public recording API with random, often invalid, inputs.
//!
//! Each case is a random call of [`PolicyLoss::record`] (or of
//! [`Context::record_row_stats`] / [`Context::row_stats`]): random rows (0..40), vocab
//! (0..600), logits dtype, byte offsets (sometimes not a multiple of the element size),
//! row strides (sometimes below vocab), sequences (rows_per_seq that divide the rows,
//! that do not, 0; sequence strides that make sequences overlap), buffer sizes
//! (sometimes too small, sometimes not a multiple of 4), buffers with or without
//! `STORAGE`, mask / advantage / log-prob / output views at random offsets and
//! sometimes too short, advantages per sequence or per token, every mode, aggregation
//! and KL estimator, temperatures, clip ratios, dual-clip constants, KL and entropy
//! coefficients, normalisers (valid or not), a gradient (none, into an f32 / f16 / bf16
//! buffer at a random layout, into the logits buffer itself, in place) and token ids
//! out of range on masked-in or masked-out rows. Every case runs on every context of
//! `common::contexts()` (each adapter, on its native paths and on the fallback).
//!
//! What passing proves, for every case:
//!
//! 1. Nothing panics (proptest turns a panic into a failure).
//! 2. Every `Err` is an [`Error`] with a non-empty message; an `InvalidArgument` names
//!    its argument (in the message too), and that argument is one the case really made
//!    invalid, as an independent host model of the documented rules says. A call the
//!    model calls valid must succeed, and a call with an invalid argument must fail:
//!    no `Err` for good input, no `Ok` for bad input. (A written gradient whose rows
//!    overlap counts as bad input: its result would depend on the order of workgroups.)
//! 3. Every `Ok` agrees, once read back, with the f64 CPU reference
//!    ([`reference::policy_loss`], [`reference::row_stats`]) on the same logical
//!    inputs, gathered on the host from the same bytes through the views' layouts: the
//!    loss and every metric within 2e-5·(1+|ref|), per-row log-probs and entropies
//!    within `common::tolerance`, the gradient element-wise within 1e-4 of its largest
//!    element plus half an ulp of its dtype. A masked-in token id out of range is
//!    instead reported by the device (`Metrics::check` names the first such row and its
//!    id). Bytes of every buffer outside the views the call writes (the logits too,
//!    unless written in place) are left exactly as they were.
//!
//! The host model is `Expect` (`LossPlan::model` for the loss): the rules the README
//! and the docs state (byte offsets a multiple of the element size, rows that split
//! into sequences, row strides ≥ vocab for logits and gradients, views inside their
//! buffer, `STORAGE` usage, outputs not sharing a buffer with an input, the
//! configuration's ranges, reference log-probs when `kl_coef ≠ 0`, the gradient not
//! in the logits buffer), plus one the docs do not state: the rows of a written
//! gradient must not overlap. With 0 rows the per-row rules are optional (`may`).
//! Shared buffers are generated too: the inputs in one buffer, the outputs in one
//! buffer, the new log-probs over the old ones (an error). Offsets reach past the
//! storage-binding alignment, so bindings start inside the buffers.
//!
//! Half of the cases are cleaned of every invalid knob, so that about half of them
//! reach the numbers. Tolerances are those of `tests/policy_loss.rs`, plus, for the
//! gradient, the f32 rounding of `p` relative to each row's coefficient (`1e-6` of
//! `coefficient_bounds`, which matters only where the f64 gradient is ~0, e.g. vocab
//! 1) and the absolute half ulp of subnormal f16.
//!
//! `API_FUZZ_CASES=N` runs N cases per property instead of 48 (about 8 ms a case on
//! lavapipe + llvmpipe). The deterministic tests at the end reproduce, one each, the
//! bugs the fuzzer found.

mod common;

use common::{close, contexts, name, tolerance};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use wgpu_policy_loss::half::{bf16, f16};
use wgpu_policy_loss::reference;
use wgpu_policy_loss::reference::compare;
use wgpu_policy_loss::wgpu;
use wgpu_policy_loss::{
    Advantages, Context, DType, Error, F32View, GradView, Gradient, HostLogits, KlEstimator,
    LogitsView, LossAggMode, LossConfig, LossInputs, LossOutputs, Metrics, PolicyLoss,
    PolicyLossMode, RowLayout, RowStatsOutputs, TargetsView,
};

// ---------------------------------------------------------------------------------
// Knobs: what proptest generates (and shrinks). Everything else follows from a seed.
// ---------------------------------------------------------------------------------

/// Where the rows of a `[rows, width]` tensor lie, before it is resolved against a
/// shape.
#[derive(Clone, Copy, Debug)]
struct LayoutKnob {
    /// Elements before row 0.
    off: u64,
    /// Extra bytes added to the byte offset (not a multiple of the element size: an error).
    misalign: u64,
    /// row_stride = width + row_pad (negative: rows overlap, an error within a sequence).
    row_pad: i64,
    /// 0: one plain sequence; 1: rows_per_seq divides the rows; 2: any (0, too large, ...).
    seq_kind: u8,
    rps_pick: u32,
    /// seq_stride = rows_per_seq · row_stride + seq_pad (negative: sequences overlap).
    seq_pad: i64,
}

fn layout_knob() -> impl Strategy<Value = LayoutKnob> {
    (
        prop_oneof![4 => 0u64..6, 1 => 6u64..300],
        prop_oneof![14 => Just(0u64), 1 => 1u64..4],
        prop_oneof![8 => 0i64..4, 1 => -3i64..0],
        prop_oneof![3 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8)],
        any::<u32>(),
        prop_oneof![8 => 0i64..5, 1 => -700i64..0],
    )
        .prop_map(
            |(off, misalign, row_pad, seq_kind, rps_pick, seq_pad)| LayoutKnob {
                off,
                misalign,
                row_pad,
                seq_kind,
                rps_pick,
                seq_pad,
            },
        )
}

/// Size and usage of a buffer, relative to what its view needs.
#[derive(Clone, Copy, Debug)]
struct BufKnob {
    /// Extra bytes, in units of 2 (negative: too small).
    slack: i64,
    /// Keep an odd size (not rounded up to 4 bytes).
    odd: bool,
    storage: bool,
}

fn buf_knob() -> impl Strategy<Value = BufKnob> {
    (
        prop_oneof![12 => 0i64..8, 1 => -6i64..0],
        prop::bool::weighted(0.06),
        prop::bool::weighted(0.96),
    )
        .prop_map(|(slack, odd, storage)| BufKnob {
            slack,
            odd,
            storage,
        })
}

/// An f32 view: byte offset and buffer.
#[derive(Clone, Copy, Debug)]
struct F32Knob {
    off_words: u64,
    misalign: u64,
    buf: BufKnob,
}

fn f32_knob() -> impl Strategy<Value = F32Knob> {
    (
        prop_oneof![6 => 0u64..4, 1 => 4u64..100],
        prop_oneof![30 => Just(0u64), 1 => 1u64..4],
        buf_knob(),
    )
        .prop_map(|(off_words, misalign, buf)| F32Knob {
            off_words,
            misalign,
            buf,
        })
}

#[derive(Clone, Copy, Debug)]
enum GradLayoutKnob {
    /// `GradView::new`: dense `[rows, vocab]`.
    Dense,
    /// `GradView::like(logits)`.
    Like,
    /// Its own layout.
    Custom(LayoutKnob),
}

#[derive(Clone, Copy, Debug)]
enum GradKnob {
    None,
    Into(DType, GradLayoutKnob, BufKnob),
    /// `Gradient::Into` the logits buffer itself: an error.
    IntoLogits(DType),
    InPlace,
}

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

fn grad_knob() -> impl Strategy<Value = GradKnob> {
    let layout = prop_oneof![
        3 => Just(GradLayoutKnob::Dense),
        3 => Just(GradLayoutKnob::Like),
        2 => layout_knob().prop_map(GradLayoutKnob::Custom),
    ];
    prop_oneof![
        3 => Just(GradKnob::None),
        6 => (dtype(), layout, buf_knob()).prop_map(|(d, l, b)| GradKnob::Into(d, l, b)),
        1 => dtype().prop_map(GradKnob::IntoLogits),
        4 => Just(GradKnob::InPlace),
    ]
}

/// A value from `good` mostly, from `bad` sometimes.
fn pick_f32(good: &'static [f32], bad: &'static [f32]) -> impl Strategy<Value = f32> {
    prop_oneof![
        14 => prop::sample::select(good),
        1 => prop::sample::select(bad),
    ]
}

fn opt_f32(good: &'static [f32], bad: &'static [f32]) -> impl Strategy<Value = Option<f32>> {
    prop_oneof![
        6 => Just(None),
        5 => prop::sample::select(good).prop_map(Some),
        1 => prop::sample::select(bad).prop_map(Some),
    ]
}

const TEMPERATURES: &[f32] = &[1.0, 1.0, 0.7, 1.3];
const BAD_TEMPERATURES: &[f32] = &[0.0, -1.0, f32::NAN, f32::INFINITY, -0.0];

fn config() -> impl Strategy<Value = LossConfig> {
    (
        (
            // the 2025 modes, whose gradient bounds coefficient_bounds knows (the 2026
            // matrix has its own tests, tests/loss_2026.rs)
            prop::sample::select(PolicyLossMode::ALL[..8].to_vec()),
            prop::sample::select(LossAggMode::ALL.to_vec()),
            prop::sample::select(KlEstimator::ALL.to_vec()),
            pick_f32(TEMPERATURES, BAD_TEMPERATURES),
        ),
        (
            pick_f32(&[0.2, 0.1, 0.28, 0.0], &[-0.1, f32::NAN, f32::INFINITY]),
            pick_f32(&[0.2, 0.28, 0.0, 0.5], &[-0.2, f32::NAN, f32::NEG_INFINITY]),
            opt_f32(&[3.0, 1.5, 1.25], &[1.0, 0.5, f32::NAN, f32::INFINITY]),
        ),
        (
            prop_oneof![
                6 => Just(0.0f32),
                6 => prop::sample::select(&[0.1f32, 0.5, -0.05, 1.0][..]),
                1 => prop::sample::select(&[f32::NAN, f32::INFINITY][..]),
            ],
            pick_f32(
                &[0.0, 0.0, 0.01, 0.1, -0.02],
                &[f32::NAN, f32::NEG_INFINITY],
            ),
            opt_f32(&[7.5, 1.0, 100.0], &[0.0, -1.0, f32::INFINITY, f32::NAN]),
            opt_f32(&[16.0, 3.0, 0.5], &[0.0, -2.0, f32::NAN]),
        ),
    )
        .prop_map(
            |(
                (mode, agg, kl, temperature),
                (clip_ratio_low, clip_ratio_high, clip_ratio_c),
                (kl_coef, entropy_coeff, global_normalizer, l_norm),
            )| LossConfig {
                mode,
                clip_ratio_low,
                clip_ratio_high,
                clip_ratio_c,
                kl_loss_type: kl,
                kl_coef,
                entropy_coeff,
                loss_agg_mode: agg,
                global_normalizer,
                l_norm,
                temperature,
                ..LossConfig::default()
            },
        )
}

/// The token ids' layout.
#[derive(Clone, Copy, Debug)]
struct TargetsKnob {
    off: u64,
    misalign: u64,
    /// Elements between ids (0: every row reads the same id).
    stride: u64,
    /// 0: plain; 1: the logits' rows_per_seq; 2: any.
    seq_kind: u8,
    rps_pick: u32,
    seq_pad: i64,
}

fn targets_knob() -> impl Strategy<Value = TargetsKnob> {
    (
        prop_oneof![6 => 0u64..4, 1 => 4u64..100],
        prop_oneof![20 => Just(0u64), 1 => 1u64..4],
        prop_oneof![8 => Just(1u64), 1 => Just(0u64), 2 => 2u64..4],
        prop_oneof![4 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8)],
        any::<u32>(),
        prop_oneof![8 => 0i64..3, 1 => -3i64..0],
    )
        .prop_map(
            |(off, misalign, stride, seq_kind, rps_pick, seq_pad)| TargetsKnob {
                off,
                misalign,
                stride,
                seq_kind,
                rps_pick,
                seq_pad,
            },
        )
}

/// Which f32 views share a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Share {
    /// Each its own.
    None,
    /// mask, advantages, old and reference log-probs one after the other in one buffer.
    Inputs,
    /// metrics, log-probs and entropies one after the other in one buffer.
    Outputs,
    /// The new log-probs written over the old ones: an output sharing an input's
    /// buffer, an error.
    LogprobsOverOld,
}

fn share() -> impl Strategy<Value = Share> {
    prop_oneof![
        6 => Just(Share::None),
        2 => Just(Share::Inputs),
        2 => Just(Share::Outputs),
        1 => Just(Share::LogprobsOverOld),
    ]
}

/// One random call of `PolicyLoss::record`.
#[derive(Clone, Debug)]
struct LossKnobs {
    rows: u32,
    vocab: u32,
    dtype: DType,
    logits: LayoutKnob,
    logits_buf: BufKnob,
    targets: TargetsKnob,
    targets_buf: BufKnob,
    mask: F32Knob,
    advantages: F32Knob,
    per_token: bool,
    old: Option<F32Knob>,
    refp: Option<F32Knob>,
    metrics: F32Knob,
    logprobs: Option<F32Knob>,
    entropy: Option<F32Knob>,
    share: Share,
    grad: GradKnob,
    cfg: LossConfig,
    /// Share of masked-out rows: 0, some, all.
    masked_out: u8,
    /// A masked-in row gets an id outside the vocabulary.
    bad_target: bool,
    seed: u64,
}

fn rows() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 3 => 1u32..8, 3 => 8u32..40]
}

fn vocab() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 4 => 1u32..8, 8 => 8u32..600]
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
    p_some: f64,
) -> impl Strategy<Value = Option<T>> {
    (prop::bool::weighted(p_some), s).prop_map(|(some, v)| some.then_some(v))
}

fn loss_knobs() -> impl Strategy<Value = LossKnobs> {
    (
        (rows(), vocab(), dtype(), layout_knob(), buf_knob()),
        (
            targets_knob(),
            buf_knob(),
            f32_knob(),
            f32_knob(),
            any::<bool>(),
        ),
        (
            opt(f32_knob(), 0.6),
            opt(f32_knob(), 0.5),
            f32_knob(),
            opt(f32_knob(), 0.8),
            opt(f32_knob(), 0.8),
            share(),
        ),
        (
            grad_knob(),
            config(),
            0u8..3,
            prop::bool::weighted(0.12),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (rows, vocab, dtype, logits, logits_buf),
                (targets, targets_buf, mask, advantages, per_token),
                (old, refp, metrics, logprobs, entropy, share),
                (grad, cfg, masked_out, bad_target, clean, seed),
            )| {
                let k = LossKnobs {
                    rows,
                    vocab,
                    dtype,
                    logits,
                    logits_buf,
                    targets,
                    targets_buf,
                    mask,
                    advantages,
                    per_token,
                    old,
                    refp,
                    metrics,
                    logprobs,
                    entropy,
                    share,
                    grad,
                    cfg,
                    masked_out,
                    bad_target,
                    seed,
                };
                if clean {
                    k.cleaned()
                } else {
                    k
                }
            },
        )
}

fn clean_layout(k: &mut LayoutKnob) {
    k.misalign = 0;
    k.row_pad = k.row_pad.max(0);
    k.seq_pad = k.seq_pad.max(0);
    if k.seq_kind == 2 {
        k.seq_kind = 1;
    }
}

fn clean_buf(b: &mut BufKnob) {
    b.slack = b.slack.abs();
    b.odd = false;
    b.storage = true;
}

fn clean_f32(k: &mut F32Knob) {
    k.misalign = 0;
    clean_buf(&mut k.buf);
}

impl LossKnobs {
    /// The same case with every knob that makes it invalid turned to a valid value
    /// (a masked-in id out of range stays: that is a valid call the device reports).
    fn cleaned(mut self) -> Self {
        self.vocab = self.vocab.max(1);
        clean_layout(&mut self.logits);
        clean_buf(&mut self.logits_buf);
        self.targets.misalign = 0;
        self.targets.seq_pad = self.targets.seq_pad.max(0);
        if self.targets.seq_kind == 2 {
            self.targets.seq_kind = 1;
        }
        clean_buf(&mut self.targets_buf);
        if self.share == Share::LogprobsOverOld {
            self.share = Share::None;
        }
        for k in [&mut self.mask, &mut self.advantages, &mut self.metrics] {
            clean_f32(k);
        }
        for k in [
            &mut self.old,
            &mut self.refp,
            &mut self.logprobs,
            &mut self.entropy,
        ]
        .into_iter()
        .flatten()
        {
            clean_f32(k);
        }
        match &mut self.grad {
            GradKnob::Into(_, l, b) => {
                if let GradLayoutKnob::Custom(l) = l {
                    clean_layout(l);
                }
                clean_buf(b);
            }
            GradKnob::IntoLogits(d) => {
                self.grad = GradKnob::Into(
                    *d,
                    GradLayoutKnob::Dense,
                    BufKnob {
                        slack: 0,
                        odd: false,
                        storage: true,
                    },
                )
            }
            _ => {}
        }
        let d = LossConfig::default();
        let c = &mut self.cfg;
        if !(c.temperature.is_finite() && c.temperature > 0.0) {
            c.temperature = d.temperature;
        }
        if !(c.clip_ratio_low.is_finite() && c.clip_ratio_low >= 0.0) {
            c.clip_ratio_low = d.clip_ratio_low;
        }
        if !(c.clip_ratio_high.is_finite() && c.clip_ratio_high >= 0.0) {
            c.clip_ratio_high = d.clip_ratio_high;
        }
        if c.clip_ratio_c.is_some_and(|v| !(v.is_finite() && v > 1.0)) {
            c.clip_ratio_c = None;
        }
        if !c.kl_coef.is_finite() {
            c.kl_coef = 0.1;
        }
        if !c.entropy_coeff.is_finite() {
            c.entropy_coeff = 0.01;
        }
        if c.global_normalizer
            .is_some_and(|v| !(v.is_finite() && v > 0.0))
        {
            c.global_normalizer = None;
        }
        if c.l_norm.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
            c.l_norm = None;
        }
        if c.kl_coef != 0.0 && self.refp.is_none() {
            c.kl_coef = 0.0;
        }
        self
    }
}

// ---------------------------------------------------------------------------------
// Host side: buffers and their bytes, layouts, the validity model.
// ---------------------------------------------------------------------------------

/// A buffer's initial bytes (what the device holds once uploaded) and its usage.
#[derive(Clone, Debug)]
struct HostBuf {
    bytes: Vec<u8>,
    storage: bool,
}

impl HostBuf {
    /// Random bytes. A tail that is not a whole 4-byte word cannot be written by the
    /// queue, so it stays 0.
    fn random(rng: &mut Xoshiro256PlusPlus, size: u64, storage: bool) -> Self {
        let mut bytes: Vec<u8> = (0..size).map(|_| rng.random::<u8>()).collect();
        let whole = size as usize / 4 * 4;
        bytes[whole..].fill(0);
        HostBuf { bytes, storage }
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Bytes that can be copied back (whole words).
    fn readable(&self) -> u64 {
        self.size() / 4 * 4
    }

    /// Writes `v` at byte `at` if it fits (a too-small buffer just drops it).
    fn put(&mut self, at: u64, v: &[u8]) {
        let at = at as usize;
        if at + v.len() <= self.bytes.len() / 4 * 4 {
            self.bytes[at..at + v.len()].copy_from_slice(v);
        }
    }

    fn upload(&self, ctx: &Context) -> wgpu::Buffer {
        let mut usage = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        if self.storage {
            usage |= wgpu::BufferUsages::STORAGE;
        }
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("api_fuzz"),
            size: self.size(),
            usage,
            mapped_at_creation: false,
        });
        let whole = self.readable() as usize;
        if whole > 0 {
            ctx.queue().write_buffer(&buffer, 0, &self.bytes[..whole]);
        }
        buffer
    }
}

fn buffer_size(need: u64, k: &BufKnob) -> u64 {
    let s = (need as i64 + 2 * k.slack).max(0) as u64;
    if k.odd {
        s
    } else {
        s.div_ceil(4) * 4
    }
}

fn f32_at(bytes: &[u8], byte: u64) -> f32 {
    let i = byte as usize;
    f32::from_le_bytes(bytes[i..i + 4].try_into().unwrap())
}

fn u32_at(bytes: &[u8], byte: u64) -> u32 {
    let i = byte as usize;
    u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap())
}

/// Element `i` of a `dtype` tensor, widened exactly.
fn elem_at(bytes: &[u8], dtype: DType, i: u64) -> f64 {
    let at = (i * dtype.size()) as usize;
    match dtype {
        DType::F32 => f32_at(bytes, at as u64) as f64,
        DType::F16 => f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f64(),
        DType::Bf16 => bf16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f64(),
    }
}

fn encode(dtype: DType, v: f32) -> Vec<u8> {
    match dtype {
        DType::F32 => v.to_le_bytes().to_vec(),
        DType::F16 => f16::from_f32(v).to_le_bytes().to_vec(),
        DType::Bf16 => bf16::from_f32(v).to_le_bytes().to_vec(),
    }
}

/// `row_start` that survives `rows_per_seq == 0` (an invalid layout, for sizing only).
fn row_start(l: &RowLayout, r: u64) -> u64 {
    RowLayout {
        rows_per_seq: l.rows_per_seq.max(1),
        ..*l
    }
    .row_start(r)
}

/// One past the last element rows `[0, rows)` of `width` touch.
fn end_elem(l: &RowLayout, rows: u32, width: u64) -> u64 {
    (0..rows as u64)
        .map(|r| row_start(l, r) + width)
        .max()
        .unwrap_or(l.offset)
}

/// Whether two of the rows share an element.
fn rows_overlap(l: &RowLayout, rows: u32, width: u64) -> bool {
    if width == 0 {
        return false;
    }
    let mut starts: Vec<u64> = (0..rows as u64).map(|r| row_start(l, r)).collect();
    starts.sort_unstable();
    starts.windows(2).any(|w| w[1] < w[0] + width)
}

fn divisors(n: u32) -> Vec<u32> {
    (1..=n).filter(|&d| n.is_multiple_of(d)).collect()
}

/// The rows_per_seq a knob asks for, given the rows.
fn pick_rps(kind: u8, pick: u32, rows: u32) -> u32 {
    match kind {
        0 => u32::MAX,
        1 if rows == 0 => 1 + pick % 3,
        1 => {
            let d = divisors(rows);
            d[pick as usize % d.len()]
        }
        _ => pick % (rows + 3),
    }
}

/// A layout in elements, without its byte offset's misalignment.
fn resolve_layout(k: &LayoutKnob, rows: u32, width: u64) -> RowLayout {
    let row_stride = (width as i64 + k.row_pad).max(0) as u64;
    let rows_per_seq = pick_rps(k.seq_kind, k.rps_pick, rows);
    let seq_stride = if rows_per_seq == u32::MAX {
        0
    } else {
        (rows_per_seq as i64 * row_stride as i64 + k.seq_pad).max(0) as u64
    };
    RowLayout {
        offset: k.off,
        row_stride,
        rows_per_seq,
        seq_stride,
    }
}

fn resolve_targets(k: &TargetsKnob, rows: u32, logits_rps: u32) -> RowLayout {
    let rows_per_seq = match k.seq_kind {
        0 => u32::MAX,
        1 => logits_rps,
        _ => pick_rps(2, k.rps_pick, rows),
    };
    let seq_stride = if rows_per_seq == u32::MAX {
        0
    } else {
        (rows_per_seq.min(64) as i64 * k.stride as i64 + k.seq_pad).max(0) as u64
    };
    RowLayout {
        offset: k.off,
        row_stride: k.stride,
        rows_per_seq,
        seq_stride,
    }
}

/// Which arguments a case makes invalid: `must` are certainly invalid (the call must
/// fail, naming one of them or of `may`), `may` are debatable (e.g. an empty view past
/// the end of its buffer), so the call may fail naming one of them or succeed.
#[derive(Clone, Debug, Default)]
struct Expect {
    must: Vec<&'static str>,
    may: Vec<&'static str>,
}

/// A row view's shape: `rows` rows of `width` elements of `elem` bytes.
#[derive(Clone, Copy)]
struct Rows {
    rows: u32,
    width: u64,
    elem: u64,
}

impl Expect {
    fn flag(&mut self, arg: &'static str, certain: bool) {
        if certain {
            self.must.push(arg);
        } else {
            self.may.push(arg);
        }
    }

    /// The rules of a row view: rows split into sequences, rows within a sequence do
    /// not overlap, the buffer is a storage buffer and holds every row. `elem` is the
    /// element size; an exact buffer whose size is not a multiple of 4 may be refused
    /// when the view reaches its last partial word.
    fn rows_view(
        &mut self,
        arg: &'static str,
        shape: Rows,
        l: &RowLayout,
        buf: &HostBuf,
        ids: bool,
    ) {
        let Rows { rows, width, elem } = shape;
        let any = rows > 0;
        if any && l.rows_per_seq == 0 {
            self.must.push(arg);
            return;
        }
        if rows > l.rows_per_seq && !rows.is_multiple_of(l.rows_per_seq) {
            self.must.push(arg);
            return;
        }
        // documented for logits (and gradients): rows of a sequence do not overlap;
        // ids may repeat (a stride of 0 broadcasts one id)
        if !ids && rows.min(l.rows_per_seq) > 1 && l.row_stride < width {
            self.must.push(arg);
        }
        if !buf.storage {
            self.flag(arg, any);
        }
        let end = end_elem(l, rows, width) * elem;
        if end > buf.size() {
            self.flag(arg, any);
        } else if end > buf.readable() {
            self.may.extend([arg, PARTIAL_WORD]);
        }
    }

    /// The rules of the logits' view (`shape`) and of the ids' (one u32 a row, which
    /// may repeat), laid out as `layouts`.
    fn logits_and_targets(
        &mut self,
        shape: Rows,
        layouts: (&RowLayout, &RowLayout),
        bufs: &[HostBuf],
    ) {
        self.rows_view("logits", shape, layouts.0, &bufs[LOGITS], false);
        let ids = Rows {
            width: 1,
            elem: 4,
            ..shape
        };
        self.rows_view("targets", ids, layouts.1, &bufs[TARGETS], true);
    }

    /// A view builder given a byte offset.
    fn misaligned(bad: bool, arg: &'static str) -> Self {
        Expect {
            must: if bad { vec![arg] } else { vec![] },
            may: vec![],
        }
    }

    /// `len` f32 values from byte `offset`.
    fn f32_view(&mut self, arg: &'static str, offset: u64, len: u64, buf: &HostBuf) {
        if !offset.is_multiple_of(4) {
            self.must.push(arg);
            return;
        }
        if !buf.storage {
            self.flag(arg, len > 0);
        }
        if offset + 4 * len > buf.size() {
            self.flag(arg, len > 0);
        }
    }

    /// Checks a result against the model: `Ok(Some(v))` when the call succeeded and
    /// the numbers must be checked, `Ok(None)` when it failed as it should.
    fn judge<T>(&self, what: &str, r: wgpu_policy_loss::Result<T>) -> Result<Option<T>, String> {
        match r {
            Ok(v) if self.must.is_empty() => Ok(Some(v)),
            Ok(_) => Err(format!(
                "{what}: Ok, but these arguments are invalid: {:?}",
                self.must
            )),
            Err(e) => {
                check_error(what, &e)?;
                match &e {
                    Error::InvalidArgument { arg, .. }
                        if self.must.contains(arg) || self.may.contains(arg) =>
                    {
                        Ok(None)
                    }
                    _ => Err(format!(
                        "{what}: Err({e}) [{e:?}], but the invalid arguments are {:?} \
                         (and perhaps {:?})",
                        self.must, self.may
                    )),
                }
            }
        }
    }
}

/// Property 2 for any error: a message, and an argument named where there is one.
fn check_error(what: &str, e: &Error) -> Result<(), String> {
    let text = e.to_string();
    if text.trim().is_empty() {
        return Err(format!("{what}: an error with an empty message: {e:?}"));
    }
    match e {
        Error::InvalidArgument { arg, reason }
            if arg.trim().is_empty() || reason.trim().is_empty() || !text.contains(arg) =>
        {
            Err(format!(
                "{what}: InvalidArgument without an argument or reason: {e:?} / `{text}`"
            ))
        }
        Error::TargetOutOfRange { .. } if !text.contains("targets") => {
            Err(format!("{what}: `{text}` does not name the targets"))
        }
        _ => Ok(()),
    }
}

fn config_errors(c: &LossConfig) -> Vec<&'static str> {
    let mut bad = Vec::new();
    let pos = |v: f32| v.is_finite() && v > 0.0;
    if !pos(c.temperature) {
        bad.push("temperature");
    }
    if !(c.clip_ratio_low.is_finite() && c.clip_ratio_low >= 0.0) {
        bad.push("clip_ratio_low");
    }
    if !(c.clip_ratio_high.is_finite() && c.clip_ratio_high >= 0.0) {
        bad.push("clip_ratio_high");
    }
    if c.clip_ratio_c.is_some_and(|v| !(v.is_finite() && v > 1.0)) {
        bad.push("clip_ratio_c");
    }
    if !c.kl_coef.is_finite() {
        bad.push("kl_coef");
    }
    if !c.entropy_coeff.is_finite() {
        bad.push("entropy_coeff");
    }
    if c.global_normalizer.is_some_and(|v| !pos(v)) {
        bad.push("global_normalizer");
    }
    if c.l_norm.is_some_and(|v| !pos(v)) {
        bad.push("l_norm");
    }
    bad
}

/// Ids outside the vocabulary (the kernels must not read them as i32 or index with them).
fn bad_id(rng: &mut Xoshiro256PlusPlus, vocab: u32) -> u32 {
    match rng.random_range(0..5) {
        0 => vocab,
        1 => vocab.saturating_add(17),
        2 => u32::MAX,
        3 => 0x8000_0000,
        _ => rng.random_range(vocab.max(1)..=u32::MAX),
    }
}

/// An f32 view planned on the host: which buffer of the case, and the byte offset.
#[derive(Clone, Copy, Debug)]
struct F32Plan {
    buf: usize,
    offset: u64,
}

impl F32Plan {
    /// Writes value `i` (if the buffer holds it).
    fn set(&self, bufs: &mut [HostBuf], i: u64, v: f32) {
        if self.offset.is_multiple_of(4) {
            bufs[self.buf].put(self.offset + 4 * i, &v.to_le_bytes());
        }
    }

    /// Value `i` as the device sees it (the view must be valid).
    fn get(&self, bufs: &[HostBuf], i: u64) -> f32 {
        f32_at(&bufs[self.buf].bytes, self.offset + 4 * i)
    }

    fn view<'a>(&self, bufs: &'a [wgpu::Buffer]) -> F32View<'a> {
        F32View::at(&bufs[self.buf], self.offset)
    }
}

/// f32 views of `len` values each, one after the other in a new buffer (gaps and
/// misalignment from the knobs); the last one's knob sizes the buffer, the first one's
/// gives its usage.
fn f32_group(
    rng: &mut Xoshiro256PlusPlus,
    bufs: &mut Vec<HostBuf>,
    members: &[(F32Knob, u64)],
) -> Vec<F32Plan> {
    let buf = bufs.len();
    let mut at = 0;
    let plans = members
        .iter()
        .map(|(k, len)| {
            let offset = at + k.off_words * 4 + k.misalign;
            at = (offset + 4 * len).div_ceil(4) * 4;
            F32Plan { buf, offset }
        })
        .collect();
    let last = members.last().map_or(0, |(k, len)| {
        let end = at - (4 * len).div_ceil(4) * 4 + 4 * len;
        buffer_size(end, &k.buf)
    });
    let storage = members.first().is_none_or(|(k, _)| k.buf.storage);
    bufs.push(HostBuf::random(rng, last, storage));
    plans
}

// ---------------------------------------------------------------------------------
// The policy loss.
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum GradPlan {
    None,
    Into {
        dtype: DType,
        /// In elements, offset included.
        layout: RowLayout,
        /// Built with `GradView::like(logits)` (then `layout` is the logits').
        like: bool,
        buf: usize,
    },
    IntoLogits(DType),
    InPlace,
}

const LOGITS: usize = 0;
const TARGETS: usize = 1;

/// Everything about a case that does not depend on the device.
#[derive(Clone, Debug)]
struct LossPlan {
    cfg: LossConfig,
    rows: u32,
    vocab: u32,
    dtype: DType,
    /// Every buffer of the case, with its initial bytes: logits, targets, then the rest.
    bufs: Vec<HostBuf>,
    /// Byte offset, and the rest of the layout (in elements, offset 0), as the caller
    /// passes them.
    logits_offset: u64,
    logits_layout: RowLayout,
    targets_offset: u64,
    targets_layout: RowLayout,
    mask: F32Plan,
    advantages: F32Plan,
    per_token: bool,
    old: Option<F32Plan>,
    refp: Option<F32Plan>,
    metrics: F32Plan,
    logprobs: Option<F32Plan>,
    entropy: Option<F32Plan>,
    grad: GradPlan,
    /// Byte offsets that are not multiples of the element size: the views' builders fail.
    logits_misaligned: bool,
    targets_misaligned: bool,
    config_errors: Vec<&'static str>,
    expect: Expect,
}

impl LossPlan {
    fn new(k: &LossKnobs) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(k.seed);
        let (rows, vocab, dtype) = (k.rows, k.vocab, k.dtype);
        let (v, n, elem) = (vocab as u64, rows as u64, dtype.size());
        let mut bufs = Vec::new();

        // logits: random values in [-4, 4] in every element of the buffer
        let mut xl = resolve_layout(&k.logits, rows, v);
        let logits_offset = k.logits.off * elem + k.logits.misalign;
        let xneed = end_elem(&xl, rows, v) * elem + k.logits.misalign;
        let size = buffer_size(xneed, &k.logits_buf);
        let mut logits = HostBuf::random(&mut rng, size, k.logits_buf.storage);
        for i in 0..logits.readable() / elem {
            let x = rng.random_range(-4.0f32..4.0);
            logits.put(i * elem, &encode(dtype, x));
        }
        bufs.push(logits);
        let logits_misaligned = !logits_offset.is_multiple_of(elem);
        xl.offset = logits_offset / elem;

        // targets: random ids anywhere, then per row
        let mut tl = resolve_targets(&k.targets, rows, xl.rows_per_seq);
        let targets_offset = k.targets.off * 4 + k.targets.misalign;
        let tneed = end_elem(&tl, rows, 1) * 4 + k.targets.misalign;
        let size = buffer_size(tneed, &k.targets_buf);
        let mut targets = HostBuf::random(&mut rng, size, k.targets_buf.storage);
        for i in 0..targets.readable() / 4 {
            let id = rng.random_range(0..vocab.max(1));
            targets.put(i * 4, &id.to_le_bytes());
        }
        bufs.push(targets);
        let targets_misaligned = !targets_offset.is_multiple_of(4);
        tl.offset = targets_offset / 4;

        let rps = xl.rows_per_seq.min(rows).max(1);
        let seqs = rows.div_ceil(rps) as u64;
        let adv_len = if k.per_token { n } else { seqs };

        // the f32 views, in buffers of their own or sharing one
        let inputs: Vec<(F32Knob, u64)> = [Some(k.mask), Some(k.advantages), k.old, k.refp]
            .into_iter()
            .zip([n, adv_len, n, n])
            .filter_map(|(k, len)| k.map(|k| (k, len)))
            .collect();
        let mut input_plans = if k.share == Share::Inputs {
            f32_group(&mut rng, &mut bufs, &inputs)
        } else {
            inputs
                .iter()
                .flat_map(|m| f32_group(&mut rng, &mut bufs, std::slice::from_ref(m)))
                .collect()
        }
        .into_iter();
        let mask = input_plans.next().expect("mask");
        let advantages = input_plans.next().expect("advantages");
        let old = k.old.map(|_| input_plans.next().expect("old"));
        let refp = k.refp.map(|_| input_plans.next().expect("ref"));
        let outs: Vec<(F32Knob, u64)> = [Some(k.metrics), k.logprobs, k.entropy]
            .into_iter()
            .zip([Metrics::LEN as u64, n, n])
            .filter_map(|(k, len)| k.map(|k| (k, len)))
            .collect();
        let mut out_plans = if k.share == Share::Outputs {
            f32_group(&mut rng, &mut bufs, &outs)
        } else {
            outs.iter()
                .flat_map(|m| f32_group(&mut rng, &mut bufs, std::slice::from_ref(m)))
                .collect()
        }
        .into_iter();
        let metrics = out_plans.next().expect("metrics");
        let mut logprobs = k.logprobs.map(|_| out_plans.next().expect("logprobs"));
        let entropy = k.entropy.map(|_| out_plans.next().expect("entropy"));
        if k.share == Share::LogprobsOverOld && old.is_some() && logprobs.is_some() {
            // the new log-probs written over the old ones
            logprobs = old;
        }

        // mask, and ids that fit it
        let p_out = [0.0, 0.3, 1.0][k.masked_out as usize];
        let bad_row = (k.bad_target && rows > 0).then(|| rng.random_range(0..rows));
        for r in 0..n {
            let m = if bad_row == Some(r as u32) || !rng.random_bool(p_out) {
                if rng.random_bool(0.1) {
                    0.5
                } else {
                    1.0
                }
            } else {
                0.0
            };
            mask.set(&mut bufs, r, m);
            let id = if bad_row == Some(r as u32) || (m == 0.0 && rng.random_bool(0.5)) {
                bad_id(&mut rng, vocab)
            } else {
                rng.random_range(0..vocab.max(1))
            };
            if !targets_misaligned {
                bufs[TARGETS].put(row_start(&tl, r) * 4, &id.to_le_bytes());
            }
        }
        for i in 0..adv_len {
            advantages.set(&mut bufs, i, rng.random_range(-1.5f32..1.5));
        }

        // old and reference log-probs near the current ones, so that ratios fall inside
        // and outside the clip band but not next to its edges
        let tau = k.cfg.temperature as f64;
        let logp: Vec<f64> = (0..n)
            .map(|r| {
                let start = row_start(&xl, r);
                let end = start + v;
                let t = row_start(&tl, r) * 4 + 4;
                if logits_misaligned
                    || targets_misaligned
                    || vocab == 0
                    || end * elem > bufs[LOGITS].readable()
                    || t > bufs[TARGETS].readable()
                {
                    return f64::NAN;
                }
                let x: Vec<f64> = (start..end)
                    .map(|i| elem_at(&bufs[LOGITS].bytes, dtype, i))
                    .collect();
                let y = u32_at(&bufs[TARGETS].bytes, t - 4);
                reference::row_stats(&x, y as usize, tau).logp
            })
            .collect();
        for p in [old, refp].into_iter().flatten() {
            for (r, &lp) in logp.iter().enumerate() {
                let base = if lp.is_finite() {
                    lp
                } else {
                    rng.random_range(-8.0..-1.0)
                };
                p.set(
                    &mut bufs,
                    r as u64,
                    (base + rng.random_range(-0.5..0.5)) as f32,
                );
            }
        }

        let grad = match k.grad {
            GradKnob::None => GradPlan::None,
            GradKnob::InPlace => GradPlan::InPlace,
            GradKnob::IntoLogits(d) => GradPlan::IntoLogits(d),
            GradKnob::Into(d, lk, bk) => {
                let (layout, like) = match lk {
                    GradLayoutKnob::Dense => (
                        RowLayout {
                            offset: 0,
                            row_stride: v,
                            rows_per_seq: u32::MAX,
                            seq_stride: 0,
                        },
                        false,
                    ),
                    GradLayoutKnob::Like => (xl, true),
                    GradLayoutKnob::Custom(l) => (resolve_layout(&l, rows, v), false),
                };
                let need = end_elem(&layout, rows, v) * d.size();
                bufs.push(HostBuf::random(
                    &mut rng,
                    buffer_size(need, &bk),
                    bk.storage,
                ));
                GradPlan::Into {
                    dtype: d,
                    layout,
                    like,
                    buf: bufs.len() - 1,
                }
            }
        };

        let mut plan = LossPlan {
            cfg: k.cfg,
            rows,
            vocab,
            dtype,
            bufs,
            logits_offset,
            logits_layout: RowLayout { offset: 0, ..xl },
            targets_offset,
            targets_layout: RowLayout { offset: 0, ..tl },
            mask,
            advantages,
            per_token: k.per_token,
            old,
            refp,
            metrics,
            logprobs,
            entropy,
            grad,
            logits_misaligned,
            targets_misaligned,
            config_errors: config_errors(&k.cfg),
            expect: Expect::default(),
        };
        plan.expect = plan.model(xl, tl, adv_len);
        plan
    }

    /// The validity model of `record` (the views and the call; not the configuration).
    fn model(&self, xl: RowLayout, tl: RowLayout, adv_len: u64) -> Expect {
        let (rows, v, n) = (self.rows, self.vocab as u64, self.rows as u64);
        let any = rows > 0;
        let bufs = &self.bufs;
        let mut e = Expect::default();
        if self.vocab == 0 {
            e.flag("logits", any);
        }
        let elem = self.dtype.size();
        e.logits_and_targets(
            Rows {
                rows,
                width: v,
                elem,
            },
            (&xl, &tl),
            bufs,
        );
        let f32s = [
            ("mask", Some(self.mask), n),
            ("advantages", Some(self.advantages), adv_len),
            ("old_logprobs", self.old, n),
            ("ref_logprobs", self.refp, n),
            ("outputs.metrics", Some(self.metrics), Metrics::LEN as u64),
            ("outputs.logprobs", self.logprobs, n),
            ("outputs.entropy", self.entropy, n),
        ];
        for (arg, p, len) in f32s {
            if let Some(p) = p {
                e.f32_view(arg, p.offset, len, &bufs[p.buf]);
            }
        }
        if !self.per_token && !any {
            // no rows: no sequences, or one empty one
            e.may.push("advantages");
        }
        if self.cfg.kl_coef != 0.0 && self.refp.is_none() {
            e.must.push("ref_logprobs");
        }
        // documented: outputs may not share a buffer with an input (one binding cannot
        // be read-only and writable in a dispatch); inputs may share, outputs too
        let mut reads = vec![("logits", LOGITS), ("targets", TARGETS)];
        reads.extend(
            [
                ("mask", Some(self.mask)),
                ("advantages", Some(self.advantages)),
                ("old_logprobs", self.old),
                ("ref_logprobs", self.refp),
            ]
            .into_iter()
            .filter_map(|(a, p)| p.map(|p| (a, p.buf))),
        );
        let mut writes: Vec<(&'static str, usize)> = [
            ("outputs.metrics", Some(self.metrics)),
            ("outputs.logprobs", self.logprobs),
            ("outputs.entropy", self.entropy),
        ]
        .into_iter()
        .filter_map(|(a, p)| p.map(|p| (a, p.buf)))
        .collect();
        match self.grad {
            GradPlan::Into { buf, .. } => writes.push(("gradient", buf)),
            GradPlan::InPlace => writes.push(("logits", LOGITS)),
            _ => {}
        }
        for (w, wb) in writes {
            if reads.iter().any(|&(r, rb)| r != w && rb == wb) {
                e.must.push(w);
            }
        }
        match self.grad {
            GradPlan::None => {}
            GradPlan::Into {
                dtype, layout, buf, ..
            } => {
                if self.vocab == 0 {
                    e.flag("gradient", any);
                }
                let mut g = Expect::default();
                let shape = Rows {
                    rows,
                    width: v,
                    elem: dtype.size(),
                };
                g.rows_view("gradient", shape, &layout, &bufs[buf], false);
                // rows that share elements: each written by another workgroup
                if g.must.is_empty() && rows_overlap(&layout, rows, v) {
                    g.must.push("gradient");
                    g.may.push(OVERLAP);
                }
                e.must.extend(g.must);
                e.may.extend(g.may);
            }
            GradPlan::IntoLogits(_) => e.must.push("gradient"),
            GradPlan::InPlace => {
                if rows_overlap(&xl, rows, v) {
                    e.must.push("gradient");
                    e.may.extend([OVERLAP, "logits"]);
                }
            }
        }
        e
    }

    fn logits_layout_abs(&self) -> RowLayout {
        RowLayout {
            offset: self.logits_offset / self.dtype.size(),
            ..self.logits_layout
        }
    }

    /// Reads the logical inputs back from the initial bytes, through the views.
    fn gather(&self) -> Gathered {
        let (rows, v) = (self.rows as u64, self.vocab as u64);
        let xl = self.logits_layout_abs();
        let tl = RowLayout {
            offset: self.targets_offset / 4,
            ..self.targets_layout
        };
        let bufs = &self.bufs;
        let mut x = Vec::with_capacity((rows * v) as usize);
        for r in 0..rows {
            let s = xl.row_start(r);
            x.extend((s..s + v).map(|i| elem_at(&bufs[LOGITS].bytes, self.dtype, i)));
        }
        let targets = (0..rows)
            .map(|r| u32_at(&bufs[TARGETS].bytes, tl.row_start(r) * 4))
            .collect();
        let f64s = |p: &F32Plan, len: u64| (0..len).map(|i| p.get(bufs, i) as f64).collect();
        let rps = xl.rows_per_seq.min(self.rows).max(1);
        let seqs = rows.div_ceil(rps as u64);
        let adv_len = if self.per_token { rows } else { seqs };
        Gathered {
            x,
            targets,
            mask: f64s(&self.mask, rows),
            advantages: f64s(&self.advantages, adv_len),
            old: self.old.as_ref().map(|p| f64s(p, rows)),
            refp: self.refp.as_ref().map(|p| f64s(p, rows)),
            rows_per_seq: rps as usize,
        }
    }

    /// Byte ranges the call may write, per buffer.
    fn written(&self) -> Vec<Vec<(u64, u64)>> {
        let (rows, v) = (self.rows as u64, self.vocab as u64);
        let mut w = vec![Vec::new(); self.bufs.len()];
        w[self.metrics.buf].push((
            self.metrics.offset,
            self.metrics.offset + 4 * Metrics::LEN as u64,
        ));
        for p in [self.logprobs, self.entropy].into_iter().flatten() {
            w[p.buf].push((p.offset, p.offset + 4 * rows));
        }
        let rows_of = |l: &RowLayout, esize: u64| {
            (0..rows)
                .map(|r| (l.row_start(r) * esize, (l.row_start(r) + v) * esize))
                .collect::<Vec<_>>()
        };
        match self.grad {
            GradPlan::Into {
                dtype, layout, buf, ..
            } => w[buf].extend(rows_of(&layout, dtype.size())),
            GradPlan::InPlace => {
                w[LOGITS].extend(rows_of(&self.logits_layout_abs(), self.dtype.size()))
            }
            _ => {}
        }
        w
    }
}

/// Marks a 16-bit view that ends in the last, partial word of a buffer whose size is
/// not a multiple of 4: the library may read it or refuse it, naming the argument.
const PARTIAL_WORD: &str = "(view ends in a partial word)";

/// Marks a written gradient whose rows overlap (see [`LossPlan::model`]).
const OVERLAP: &str = "(rows of the written gradient overlap)";

struct Gathered {
    x: Vec<f64>,
    targets: Vec<u32>,
    mask: Vec<f64>,
    advantages: Vec<f64>,
    old: Option<Vec<f64>>,
    refp: Option<Vec<f64>>,
    rows_per_seq: usize,
}

/// Bytes outside the written ranges are as they were.
fn untouched(
    what: &str,
    before: &[u8],
    after: &[u8],
    written: &[(u64, u64)],
) -> Result<(), String> {
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        let i = i as u64;
        if a != b && !written.iter().any(|&(lo, hi)| lo <= i && i < hi) {
            return Err(format!(
                "{what}: byte {i} outside the views changed ({a:#04x} → {b:#04x})"
            ));
        }
    }
    Ok(())
}

fn run_loss_case(ctx: &Context, plan: &LossPlan) -> Result<(), String> {
    let what = name(ctx);
    let (rows, vocab, dtype) = (plan.rows, plan.vocab, plan.dtype);
    let bufs: Vec<wgpu::Buffer> = plan.bufs.iter().map(|b| b.upload(ctx)).collect();

    // the views' builders check their byte offsets
    let logits = LogitsView {
        buffer: &bufs[LOGITS],
        dtype,
        rows,
        vocab,
        layout: plan.logits_layout,
    }
    .with_byte_offset(plan.logits_offset);
    let Some(logits) = Expect::misaligned(plan.logits_misaligned, "logits")
        .judge(&format!("{what}: LogitsView::with_byte_offset"), logits)?
    else {
        return Ok(());
    };
    let targets = TargetsView {
        buffer: &bufs[TARGETS],
        layout: plan.targets_layout,
    }
    .with_byte_offset(plan.targets_offset);
    let Some(targets) = Expect::misaligned(plan.targets_misaligned, "targets")
        .judge(&format!("{what}: TargetsView::with_byte_offset"), targets)?
    else {
        return Ok(());
    };
    let cfg_expect = Expect {
        must: plan.config_errors.clone(),
        may: vec![],
    };
    let new = PolicyLoss::new(ctx, plan.cfg);
    let Some(loss) = cfg_expect.judge(&format!("{what}: PolicyLoss::new"), new)? else {
        return Ok(());
    };

    let inputs = LossInputs {
        logits,
        targets,
        mask: plan.mask.view(&bufs),
        advantages: if plan.per_token {
            Advantages::PerToken(plan.advantages.view(&bufs))
        } else {
            Advantages::PerSequence(plan.advantages.view(&bufs))
        },
        old_logprobs: plan.old.map(|p| p.view(&bufs)),
        ref_logprobs: plan.refp.map(|p| p.view(&bufs)),
        temperatures: None,
        kept: None,
    };
    let gradient = match plan.grad {
        GradPlan::Into {
            dtype: d,
            layout,
            like,
            buf,
        } => Gradient::Into(if like {
            GradView::like(&bufs[buf], d, &logits)
        } else {
            GradView {
                buffer: &bufs[buf],
                dtype: d,
                layout,
            }
        }),
        GradPlan::IntoLogits(d) => Gradient::Into(GradView::like(&bufs[LOGITS], d, &logits)),
        GradPlan::InPlace => Gradient::InPlace,
        GradPlan::None => Gradient::None,
    };
    let outputs = LossOutputs {
        metrics: plan.metrics.view(&bufs),
        logprobs: plan.logprobs.map(|p| p.view(&bufs)),
        entropy: plan.entropy.map(|p| p.view(&bufs)),
        lse: None,
    };
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let recorded = loss.record(&mut encoder, &inputs, gradient, &outputs);
    let what = format!(
        "{what}: record (invalid: {:?}, perhaps {:?})",
        plan.expect.must, plan.expect.may
    );
    if plan.expect.judge(&what, recorded)?.is_none() {
        return Ok(());
    }

    // every buffer, back (the call may write only the views it was given)
    let list: Vec<(&wgpu::Buffer, u64)> = bufs
        .iter()
        .zip(&plan.bufs)
        .map(|(b, h)| (b, h.readable()))
        .collect();
    let after = ctx
        .read_back(encoder, &list)
        .map_err(|e| format!("{what}: read_back: {e}"))?;
    compare_loss(&what, plan, &after)
}

fn compare_loss(what: &str, plan: &LossPlan, after: &[Vec<u8>]) -> Result<(), String> {
    let (rows, vocab) = (plan.rows as u64, plan.vocab as u64);
    let written = plan.written();
    for (i, (h, a)) in plan.bufs.iter().zip(after).enumerate() {
        untouched(&format!("{what}: buffer {i}"), &h.bytes, a, &written[i])?;
    }

    let g = plan.gather();
    let cfg = plan.cfg;
    let batch = reference::Batch {
        logits: &g.x,
        vocab: vocab as usize,
        rows_per_seq: g.rows_per_seq,
        targets: &g.targets,
        mask: &g.mask,
        advantages: &g.advantages,
        old_logp: g.old.as_deref(),
        ref_logp: g.refp.as_deref(),
    };
    let want = reference::policy_loss(&cfg, &batch);

    // the metrics, and the device's check of the ids
    let mo = plan.metrics.offset as usize;
    let mbytes = &after[plan.metrics.buf][mo..mo + 4 * Metrics::LEN];
    let m = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(mbytes));
    let first_bad = (0..rows as usize).find(|&r| g.mask[r] > 0.0 && g.targets[r] as u64 >= vocab);
    let checked = m.check(plan.vocab);
    let want = match (first_bad, want) {
        (Some(r), want) => {
            let id = g.targets[r];
            match checked {
                Err(Error::TargetOutOfRange {
                    row,
                    id: got_id,
                    vocab: v,
                }) if row == r && got_id == id as i64 && v == plan.vocab => {}
                other => {
                    return Err(format!(
                        "{what}: row {r} (masked in) has id {id} ≥ vocab {vocab}: \
                         Metrics::check should name it, got {other:?} (metrics {m:?})"
                    ))
                }
            }
            if !matches!(want, Err(Error::TargetOutOfRange { row, .. }) if row == r) {
                return Err(format!(
                    "{what}: the reference does not report row {r}: {want:?}"
                ));
            }
            return Ok(());
        }
        (None, Ok(want)) => {
            if let Err(e) = checked {
                return Err(format!(
                    "{what}: every masked-in id is in range, but Metrics::check says {e} \
                     (metrics {m:?})"
                ));
            }
            want
        }
        (None, Err(e)) => return Err(format!("{what}: the reference failed: {e}")),
    };

    let tol = |w: f64| 2e-5 * (1.0 + w.abs());
    let mask_sum: f64 = g.mask.iter().filter(|&&v| v > 0.0).sum();
    let wm = &want.metrics;
    // a covariance selection that f32 rounding can decide either way: what depends on it
    // (the loss, the gradient) is not compared, the rest is
    let near_tie = near_tied_selection(&cfg, &batch, &want.logp);
    for (label, got, w) in [
        ("loss", m.loss, want.loss),
        ("pg_clipfrac", m.pg_clipfrac, wm.pg_clipfrac),
        (
            "pg_clipfrac_lower",
            m.pg_clipfrac_lower,
            wm.pg_clipfrac_lower,
        ),
        ("ppo_kl", m.ppo_kl, wm.ppo_kl),
        ("kl", m.kl, wm.kl),
        ("entropy_mean", m.entropy_mean, wm.entropy_mean),
        ("nonfinite_rows", m.nonfinite_rows, wm.nonfinite_rows),
        ("mask_sum", m.mask_sum, mask_sum),
    ] {
        if label == "loss" && near_tie.is_some() {
            continue;
        }
        close(got, w, tol(w)).map_err(|e| {
            let tie = near_tie.as_deref().unwrap_or("none");
            format!("{what}: {label}: {e} (metrics {m:?}; near tie: {tie})")
        })?;
    }

    // per-row outputs on masked-in rows
    let (v, tau) = (vocab as usize, cfg.temperature as f64);
    for (label, p, want_of) in [
        ("logprobs", plan.logprobs, &want.logp),
        ("entropy", plan.entropy, &want.entropy),
    ] {
        let Some(p) = p else {
            continue;
        };
        for r in (0..rows as usize).filter(|&r| g.mask[r] > 0.0) {
            let row = &g.x[r * v..(r + 1) * v];
            let st = reference::row_stats(row, g.targets[r] as usize, tau);
            let scale = row
                .iter()
                .fold(st.lse.abs(), |a, &x| a.max((x / tau).abs()));
            let got = f32_at(&after[p.buf], p.offset + 4 * r as u64);
            close(got, want_of[r], tolerance(scale))
                .map_err(|e| format!("{what}: outputs.{label}[{r}]: {e}"))?;
        }
    }

    // the gradient, element-wise, where it went
    if near_tie.is_some() {
        return Ok(());
    }
    let (gd, gl, bytes) = match plan.grad {
        GradPlan::Into {
            dtype, layout, buf, ..
        } => (dtype, layout, &after[buf]),
        GradPlan::InPlace => (plan.dtype, plan.logits_layout_abs(), &after[LOGITS]),
        _ => return Ok(()),
    };
    // the library's rule (reference::compare), its `b` of the row's scalar
    // coefficients, which max|g_ref| stands for elsewhere: here a row can have none
    // (V = 1: 1 − p = 0 in f64, a few ulps of the coefficient in f32)
    let scale = compare::largest_finite(&want.grad);
    let tol = compare::Tolerance::logits_grad(gd.into());
    let bounds = coefficient_bounds(&cfg, &batch, &want.logp);
    for r in 0..rows {
        let s = gl.row_start(r);
        // the partial last word of an odd-sized buffer is not compared
        let n = (0..vocab)
            .take_while(|&j| (s + j + 1) * gd.size() <= bytes.len() as u64)
            .count();
        let got: Vec<f32> = (0..n as u64)
            .map(|j| elem_at(bytes, gd, s + j) as f32)
            .collect();
        let w = &want.grad[(r * vocab) as usize..(r * vocab) as usize + n];
        // the row's coefficients are rounded to a few u each (COEF_ROUNDING) before they
        // meet: where 1 − p cancels they are the whole element, so they count at that
        // size, not at b's
        let row_scale = scale.max(bounds[r as usize] * compare::COEF_ROUNDING / compare::OF_MAX);
        compare::within_scales(&got, w, tol, |_| row_scale).map_err(|e| {
            format!(
                "{what}: grad row {r} ({gd}): {e} (mask {}, target {})",
                g.mask[r as usize], g.targets[r as usize]
            )
        })?;
    }
    Ok(())
}

/// Why `clip_cov` / `kl_cov`'s choice of tokens is not decided by the data: two
/// covariances within the kernels' f32 rounding of each other at the k-th place
/// (kl_cov), or one at a bound (clip_cov). Equal in f64 counts too: ties that hold in
/// exact arithmetic but not in f32 are common (with two tokens, cov₀ = cov₁ =
/// (A₀ − A₁)(logp₀ − logp₁)/4 always). The ties the kernels keep exact are every
/// advantage equal or every log-prob equal (every covariance 0, the means taken about a
/// pivot token): decided (to the lower row) and compared; tests/select.rs checks them
/// on purpose.
fn near_tied_selection(cfg: &LossConfig, b: &reference::Batch<'_>, logp: &[f64]) -> Option<String> {
    if !cfg.mode.selects_tokens() {
        return None;
    }
    let live: Vec<usize> = (0..b.targets.len()).filter(|&r| b.mask[r] > 0.0).collect();
    let &first = live.first()?;
    let (a0, l0) = (b.advantage(first), logp[first]);
    if live.iter().any(|&r| !logp[r].is_finite())
        || live.iter().all(|&r| b.advantage(r) == a0)
        || live.iter().all(|&r| logp[r] == l0)
    {
        return None;
    }
    let all = reference::covariances(b, logp, &live);
    let mut cov: Vec<f64> = live.iter().map(|&r| all[r]).collect();
    let slack = 1e-4 * cov.iter().fold(1.0f64, |a, c| a.max(c.abs()));
    let near = |x: f64, y: f64| (x - y).abs() <= slack;
    if cfg.mode == PolicyLossMode::KlCov {
        let k = ((live.len() as f32 * cfg.kl_cov_ratio).floor() as usize).max(1);
        cov.sort_by(|x, y| y.total_cmp(x));
        return (k < cov.len() && near(cov[k - 1], cov[k]))
            .then(|| format!("kl_cov: covariances {} and {}", cov[k - 1], cov[k]));
    }
    let (lb, ub) = (cfg.clip_cov_lb as f64, cfg.clip_cov_ub as f64);
    cov.iter()
        .find(|&&c| near(c, lb) || near(c, ub))
        .map(|c| format!("clip_cov: covariance {c} at a bound ({lb}, {ub})"))
}

/// An upper bound of each row's gradient coefficients, `(w_r / τ)·(|G_r| + |γ|·2·max|z|)`
/// with `G_r` bounded from the advantage, the largest ratio and the KL derivative.
/// The kernels' f32 rounding of the coefficients (a few ulps) is relative to it, so a
/// gradient that is exactly 0 in f64 (vocab 1: `1 − p = 0`) is a few ulps of it on the
/// device: the scale of the comparison rule's `b` on such rows.
fn coefficient_bounds(cfg: &LossConfig, b: &reference::Batch<'_>, logp: &[f64]) -> Vec<f64> {
    let rows = b.targets.len();
    let weights = reference::row_weights(cfg, b);
    let tau = cfg.temperature as f64;
    let live = |r: &usize| b.mask[*r] > 0.0;
    let ratio = match (cfg.mode, b.old_logp) {
        (PolicyLossMode::Reinforce, _) | (_, None) => 1.0,
        (_, Some(old)) => (0..rows)
            .filter(live)
            .map(|r| (logp[r] - old[r]).abs().min(20.0).exp())
            .fold(1.0, f64::max),
    };
    (0..rows)
        .map(|r| {
            if !live(&r) {
                return 0.0;
            }
            let a = b.advantage(r);
            let dkl = b.ref_logp.map_or(0.0, |rf| {
                let d = rf[r] - logp[r];
                match cfg.kl_loss_type {
                    KlEstimator::K1 | KlEstimator::Abs => 1.0,
                    KlEstimator::K2
                    | KlEstimator::K1Plus
                    | KlEstimator::K3Plus
                    | KlEstimator::AbsPlus => d.abs(),
                    KlEstimator::K3 => 1.0 + d.abs().min(20.0).exp(),
                }
            });
            let v = b.vocab;
            let zmax = b.logits[r * v..(r + 1) * v]
                .iter()
                .fold(0.0f64, |m, &x| m.max((x / tau).abs()));
            b.mask[r] * weights[r] / tau
                * (a.abs() * ratio
                    + (cfg.kl_coef as f64).abs() * dkl
                    + (cfg.entropy_coeff as f64).abs() * 2.0 * zmax)
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Row statistics.
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct StatsKnobs {
    rows: u32,
    vocab: u32,
    dtype: DType,
    logits: LayoutKnob,
    logits_buf: BufKnob,
    targets: TargetsKnob,
    targets_buf: BufKnob,
    lse: F32Knob,
    logp: F32Knob,
    entropy: F32Knob,
    temperature: f32,
    /// Host API: extra logits values / ids (a length that does not fit).
    host_len_delta: i64,
    host_ids_delta: i64,
    bad_target: bool,
    shared_outputs: bool,
    seed: u64,
}

fn stats_knobs() -> impl Strategy<Value = StatsKnobs> {
    (
        (rows(), vocab(), dtype(), layout_knob(), buf_knob()),
        (
            targets_knob(),
            buf_knob(),
            f32_knob(),
            f32_knob(),
            f32_knob(),
        ),
        (
            pick_f32(TEMPERATURES, BAD_TEMPERATURES),
            prop_oneof![10 => Just(0i64), 1 => -3i64..4],
            prop_oneof![10 => Just(0i64), 1 => -2i64..3],
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.3),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (rows, vocab, dtype, logits, logits_buf),
                (targets, targets_buf, lse, logp, entropy),
                (
                    temperature,
                    host_len_delta,
                    host_ids_delta,
                    bad_target,
                    shared_outputs,
                    clean,
                    seed,
                ),
            )| {
                let mut k = StatsKnobs {
                    rows,
                    vocab,
                    dtype,
                    logits,
                    logits_buf,
                    targets,
                    targets_buf,
                    lse,
                    logp,
                    entropy,
                    temperature,
                    host_len_delta,
                    host_ids_delta,
                    bad_target,
                    shared_outputs,
                    seed,
                };
                if clean {
                    k.vocab = k.vocab.max(1);
                    clean_layout(&mut k.logits);
                    clean_buf(&mut k.logits_buf);
                    k.targets.misalign = 0;
                    if k.targets.seq_kind == 2 {
                        k.targets.seq_kind = 1;
                    }
                    k.targets.seq_pad = k.targets.seq_pad.max(0);
                    clean_buf(&mut k.targets_buf);
                    for o in [&mut k.lse, &mut k.logp, &mut k.entropy] {
                        clean_f32(o);
                    }
                    if !(k.temperature.is_finite() && k.temperature > 0.0) {
                        k.temperature = 1.0;
                    }
                    k.host_len_delta = 0;
                    k.host_ids_delta = 0;
                }
                k
            },
        )
}

fn run_stats_views(ctx: &Context, k: &StatsKnobs) -> Result<(), String> {
    let what = format!("{}: record_row_stats", name(ctx));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(k.seed);
    let (rows, vocab, dtype) = (k.rows, k.vocab, k.dtype);
    let (v, n, elem) = (vocab as u64, rows as u64, dtype.size());

    let mut xl = resolve_layout(&k.logits, rows, v);
    let x_offset = k.logits.off * elem + k.logits.misalign;
    let xneed = end_elem(&xl, rows, v) * elem + k.logits.misalign;
    let size = buffer_size(xneed, &k.logits_buf);
    let mut xh = HostBuf::random(&mut rng, size, k.logits_buf.storage);
    for i in 0..xh.readable() / elem {
        let x = rng.random_range(-4.0f32..4.0);
        xh.put(i * elem, &encode(dtype, x));
    }
    xl.offset = 0;
    let mut tl = resolve_targets(&k.targets, rows, xl.rows_per_seq);
    let t_offset = k.targets.off * 4 + k.targets.misalign;
    let tneed = end_elem(&tl, rows, 1) * 4 + k.targets.misalign;
    let size = buffer_size(tneed, &k.targets_buf);
    let mut th = HostBuf::random(&mut rng, size, k.targets_buf.storage);
    for i in 0..th.readable() / 4 {
        let id = if k.bad_target && rng.random_bool(0.2) {
            bad_id(&mut rng, vocab)
        } else {
            rng.random_range(0..vocab.max(1))
        };
        th.put(i * 4, &id.to_le_bytes());
    }
    tl.offset = 0;
    let mut bufs = vec![xh, th];
    let members = [(k.lse, n), (k.logp, n), (k.entropy, n)];
    let outs: Vec<F32Plan> = if k.shared_outputs {
        f32_group(&mut rng, &mut bufs, &members)
    } else {
        members
            .iter()
            .flat_map(|m| f32_group(&mut rng, &mut bufs, std::slice::from_ref(m)))
            .collect()
    };

    // the model
    let xl_abs = RowLayout {
        offset: x_offset / elem,
        ..xl
    };
    let tl_abs = RowLayout {
        offset: t_offset / 4,
        ..tl
    };
    let mut e = Expect::default();
    if !(k.temperature.is_finite() && k.temperature > 0.0) {
        e.must.push("temperature");
    }
    if vocab == 0 {
        e.flag("logits", rows > 0);
    }
    e.logits_and_targets(
        Rows {
            rows,
            width: v,
            elem,
        },
        (&xl_abs, &tl_abs),
        &bufs,
    );
    for (arg, p) in ["out.lse", "out.logp", "out.entropy"]
        .into_iter()
        .zip(&outs)
    {
        e.f32_view(arg, p.offset, n, &bufs[p.buf]);
    }

    let gpu: Vec<wgpu::Buffer> = bufs.iter().map(|b| b.upload(ctx)).collect();
    let logits = LogitsView {
        buffer: &gpu[LOGITS],
        dtype,
        rows,
        vocab,
        layout: xl,
    }
    .with_byte_offset(x_offset);
    let Some(logits) =
        Expect::misaligned(!x_offset.is_multiple_of(elem), "logits").judge(&what, logits)?
    else {
        return Ok(());
    };
    let targets = TargetsView {
        buffer: &gpu[TARGETS],
        layout: tl,
    }
    .with_byte_offset(t_offset);
    let Some(targets) =
        Expect::misaligned(!t_offset.is_multiple_of(4), "targets").judge(&what, targets)?
    else {
        return Ok(());
    };
    let out = RowStatsOutputs {
        lse: outs[0].view(&gpu),
        logp: outs[1].view(&gpu),
        entropy: outs[2].view(&gpu),
    };
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let r = ctx.record_row_stats(&mut encoder, &logits, &targets, k.temperature, &out);
    let what = format!("{what} (invalid: {:?}, perhaps {:?})", e.must, e.may);
    if e.judge(&what, r)?.is_none() {
        return Ok(());
    }
    let list: Vec<(&wgpu::Buffer, u64)> = gpu
        .iter()
        .zip(&bufs)
        .map(|(b, h)| (b, h.readable()))
        .collect();
    let after = ctx
        .read_back(encoder, &list)
        .map_err(|e| format!("{what}: read_back: {e}"))?;
    let mut written = vec![Vec::new(); bufs.len()];
    for p in &outs {
        written[p.buf].push((p.offset, p.offset + 4 * n));
    }
    for (i, (h, a)) in bufs.iter().zip(&after).enumerate() {
        untouched(&format!("{what}: buffer {i}"), &h.bytes, a, &written[i])?;
    }
    let tau = k.temperature as f64;
    for r in 0..n {
        let s = xl_abs.row_start(r);
        let row: Vec<f64> = (s..s + v)
            .map(|i| elem_at(&bufs[LOGITS].bytes, dtype, i))
            .collect();
        let id = u32_at(&bufs[TARGETS].bytes, tl_abs.row_start(r) * 4);
        // an id out of range gives a NaN log-prob (the reference's too)
        let st = reference::row_stats(&row, id as usize, tau);
        let scale = row
            .iter()
            .fold(st.lse.abs(), |a, &x| a.max((x / tau).abs()));
        for (p, (label, w)) in
            outs.iter()
                .zip([("lse", st.lse), ("logp", st.logp), ("entropy", st.entropy)])
        {
            let got = f32_at(&after[p.buf], p.offset + 4 * r);
            close(got, w, tolerance(scale))
                .map_err(|e| format!("{what}: {label}[{r}] (id {id}, vocab {vocab}): {e}"))?;
        }
    }
    Ok(())
}

/// `Context::row_stats` on host slices of random (sometimes wrong) lengths.
fn run_stats_host(ctx: &Context, k: &StatsKnobs) -> Result<(), String> {
    let what = format!("{}: row_stats", name(ctx));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(k.seed ^ 0x5eed);
    let (vocab, dtype) = (k.vocab, k.dtype);
    let len = (k.rows as i64 * vocab as i64 + k.host_len_delta).max(0) as usize;
    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-4.0f32..4.0)).collect();
    let ids_len = (k.rows as i64 + k.host_ids_delta).max(0) as usize;
    let ids: Vec<u32> = (0..ids_len)
        .map(|_| {
            if k.bad_target && rng.random_bool(0.2) {
                bad_id(&mut rng, vocab)
            } else {
                rng.random_range(0..vocab.max(1))
            }
        })
        .collect();
    let l = common::Logits::from_f32(dtype, &values);
    let host: HostLogits<'_> = l.host();

    let mut e = Expect::default();
    let mut range_error = None;
    if vocab == 0 {
        e.must.push("vocab");
    } else if !len.is_multiple_of(vocab as usize) {
        e.must.push("logits");
    } else {
        let rows = len / vocab as usize;
        if ids.len() != rows {
            e.must.push("targets");
        } else if let Some(r) = ids.iter().position(|&y| y >= vocab) {
            range_error = Some((r, ids[r]));
        }
    }
    if !(k.temperature.is_finite() && k.temperature > 0.0) {
        e.must.push("temperature");
    }
    let r = ctx.row_stats(host, vocab, &ids, k.temperature);
    let got = match (range_error, r) {
        (Some((row, id)), Err(err)) => {
            check_error(&what, &err)?;
            return match err {
                Error::TargetOutOfRange {
                    row: got_row,
                    id: got_id,
                    vocab: got_v,
                } if got_row == row && got_id == id as i64 && got_v == vocab => Ok(()),
                Error::InvalidArgument { arg, .. } if e.must.contains(&arg) => Ok(()),
                other => Err(format!(
                    "{what}: row {row} has id {id} ≥ vocab {vocab}, got {other:?}"
                )),
            };
        }
        (Some((row, id)), Ok(_)) => {
            return Err(format!(
                "{what}: Ok, but row {row} has id {id} ≥ vocab {vocab}"
            ))
        }
        (None, r) => match e.judge(&what, r)? {
            Some(v) => v,
            None => return Ok(()),
        },
    };
    let x = l.values();
    let rows = len / vocab as usize;
    let want = reference::row_stats_batch(&x, vocab as usize, &ids, k.temperature as f64);
    if got.lse.len() != rows || got.logp.len() != rows || got.entropy.len() != rows {
        return Err(format!(
            "{what}: {rows} rows, got {} / {} / {} values",
            got.lse.len(),
            got.logp.len(),
            got.entropy.len()
        ));
    }
    let v = vocab as usize;
    let tau = k.temperature as f64;
    for (r, w) in want.iter().enumerate() {
        let scale = x[r * v..(r + 1) * v]
            .iter()
            .fold(w.lse.abs(), |a, &z| a.max((z / tau).abs()));
        for (label, got, w) in [
            ("lse", got.lse[r], w.lse),
            ("logp", got.logp[r], w.logp),
            ("entropy", got.entropy[r], w.entropy),
        ] {
            close(got, w, tolerance(scale)).map_err(|e| format!("{what}: {label}[{r}]: {e}"))?;
        }
    }
    Ok(())
}

fn config_for_proptest() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("API_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48),
        // nothing written next to the test file; a failure prints its inputs
        failure_persistence: None,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

fn on_every_context<K>(
    k: &K,
    f: impl Fn(&Context, &K) -> Result<(), String>,
) -> Result<(), TestCaseError> {
    for ctx in contexts() {
        f(ctx, k).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config_for_proptest())]

    #[test]
    fn policy_loss_record_fuzz(k in loss_knobs()) {
        let plan = LossPlan::new(&k);
        on_every_context(&plan, run_loss_case)?;
    }

    #[test]
    fn row_stats_fuzz(k in stats_knobs()) {
        on_every_context(&k, run_stats_views)?;
        on_every_context(&k, run_stats_host)?;
    }
}

// ---------------------------------------------------------------------------------
// Bugs the fuzzer found, one deterministic case each.
// ---------------------------------------------------------------------------------

fn encoder(ctx: &Context) -> wgpu::CommandEncoder {
    ctx.device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default())
}

fn storage(ctx: &Context, bytes: &[u8]) -> wgpu::Buffer {
    HostBuf {
        bytes: bytes.to_vec(),
        storage: true,
    }
    .upload(ctx)
}

/// The reinforce loss of a small dense batch, for the cases below.
fn reinforce() -> LossConfig {
    LossConfig {
        mode: PolicyLossMode::Reinforce,
        ..LossConfig::default()
    }
}

/// `record` with 0 rows returns `Ok` but writes nothing, so the metrics buffer keeps
/// whatever it held (a previous step's loss; zeros decode as "row 0 has id 0 out of
/// range"). docs/MATH.md#aggregation-and-presets: an empty batch has loss 0. The host
/// API inherits it: `Context::policy_loss` on an empty batch fails with
/// `TargetOutOfRange { row: 0 }`.
#[test]
fn empty_batch_writes_its_metrics() {
    for ctx in contexts() {
        let what = name(ctx);
        let x = storage(ctx, &[0; 16]);
        let y = storage(ctx, &[0; 4]);
        let m = storage(ctx, &[0; 4]);
        let a = storage(ctx, &[0; 4]);
        // a metrics buffer that holds a previous step's values
        let stale: Vec<f32> = (0..Metrics::LEN).map(|i| 7.0 + i as f32).collect();
        let metrics = storage(ctx, bytemuck::cast_slice(&stale));
        let loss = PolicyLoss::new(ctx, reinforce()).unwrap();
        let inputs = LossInputs::new(
            LogitsView::new(&x, DType::F32, 0, 4),
            TargetsView::new(&y),
            F32View::new(&m),
            Advantages::PerSequence(F32View::new(&a)),
        );
        let outputs = LossOutputs {
            metrics: F32View::new(&metrics),
            logprobs: None,
            entropy: None,
            lse: None,
        };
        let mut enc = encoder(ctx);
        loss.record(&mut enc, &inputs, Gradient::None, &outputs)
            .unwrap_or_else(|e| panic!("{what}: record: {e}"));
        let got = ctx
            .read_back(enc, &[(&metrics, 4 * Metrics::LEN as u64)])
            .unwrap();
        let got = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
        assert!(
            got.loss == 0.0 && got.mask_sum == 0.0 && got.check(4).is_ok(),
            "{what}: 0 rows: the metrics should say loss 0, Σ mask 0, no bad id; got {got:?}"
        );

        let host = ctx.policy_loss(
            &reinforce(),
            &wgpu_policy_loss::HostBatch {
                kept: None,
                temperatures: None,
                logits: HostLogits::F32(&[]),
                vocab: 4,
                rows_per_seq: None,
                targets: &[],
                mask: &[],
                advantages: &[0.0],
                old_logprobs: None,
                ref_logprobs: None,
            },
            Some(DType::F32),
        );
        match host {
            Ok(h) => assert_eq!(h.metrics.loss, 0.0, "{what}: policy_loss on 0 rows"),
            Err(e) => panic!("{what}: policy_loss on 0 rows: {e}"),
        }
    }
}

/// Asking for one per-row output (log-probs, entropies or lse) writes it, right, and
/// leaves the others' buffers as they were.
#[test]
fn one_per_row_output_alone_is_written() {
    let (rows, vocab) = (3usize, 5usize);
    let x: Vec<f32> = (0..rows * vocab)
        .map(|i| (i as f32 * 0.37).sin() * 3.0)
        .collect();
    let ids = [1u32, 4, 0];
    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let want = reference::row_stats_batch(&xs, vocab, &ids, 1.0);
    for ctx in contexts() {
        let what = name(ctx);
        let xb = storage(ctx, bytemuck::cast_slice(&x));
        let yb = storage(ctx, bytemuck::cast_slice(&ids));
        let mb = storage(ctx, bytemuck::cast_slice(&[1.0f32; 3]));
        let ab = storage(ctx, bytemuck::cast_slice(&[1.0f32]));
        let loss = PolicyLoss::new(ctx, reinforce()).unwrap();
        let inputs = LossInputs::new(
            LogitsView::new(&xb, DType::F32, rows as u32, vocab as u32),
            TargetsView::new(&yb),
            F32View::new(&mb),
            Advantages::PerSequence(F32View::new(&ab)),
        );
        for wanted in ["logprobs", "entropy", "lse"] {
            let out = wgpu_policy_loss::LossBuffers::new(ctx, rows as u32);
            // sentinel contents, so that an unwritten output shows
            for b in [&out.logprobs, &out.entropy, &out.lse] {
                ctx.queue()
                    .write_buffer(b, 0, bytemuck::cast_slice(&[9.0f32; 3]));
            }
            let only = |label, b| (wanted == label).then(|| F32View::new(b));
            let outputs = LossOutputs {
                metrics: F32View::new(&out.metrics),
                logprobs: only("logprobs", &out.logprobs),
                entropy: only("entropy", &out.entropy),
                lse: only("lse", &out.lse),
            };
            let mut enc = encoder(ctx);
            loss.record(&mut enc, &inputs, Gradient::None, &outputs)
                .unwrap_or_else(|e| panic!("{what}: record: {e}"));
            let bufs = [(&out.logprobs, 12), (&out.entropy, 12), (&out.lse, 12)];
            let got = ctx.read_back(enc, &bufs).unwrap();
            for (k, label) in ["logprobs", "entropy", "lse"].into_iter().enumerate() {
                let got: Vec<f32> = bytemuck::pod_collect_to_vec(&got[k]);
                for (r, w) in want.iter().enumerate() {
                    let w = match label {
                        _ if label != wanted => 9.0,
                        "logprobs" => w.logp,
                        "entropy" => w.entropy,
                        _ => w.lse,
                    };
                    close(got[r], w, tolerance(10.0)).unwrap_or_else(|e| {
                        panic!("{what}: outputs.{wanted} alone, {label} row {r}: {e} (got {got:?})")
                    });
                }
            }
        }
    }
}

/// A written gradient whose rows share elements (`GradView` with a sequence stride
/// of 0, or `Gradient::InPlace` over logits rows that overlap) is accepted, and the
/// result depends on which workgroup writes last: a separate gradient holds one row's
/// gradient instead of their sum, and in place a row reads another row's gradient as
/// its logits, so even the loss is wrong. It must be an error naming the gradient.
#[test]
fn overlapping_gradient_rows_are_an_error() {
    for ctx in contexts() {
        let what = name(ctx);
        let x = storage(ctx, bytemuck::cast_slice(&[0.5f32, -1.0, 2.0, 0.25]));
        let y = storage(ctx, bytemuck::cast_slice(&[1u32, 2]));
        let m = storage(ctx, bytemuck::cast_slice(&[1.0f32, 1.0]));
        let a = storage(ctx, bytemuck::cast_slice(&[1.0f32, 1.0]));
        let g = storage(ctx, &[0; 16]);
        let out = wgpu_policy_loss::LossBuffers::new(ctx, 2);
        let loss = PolicyLoss::new(ctx, reinforce()).unwrap();
        // two rows over the same 4 logits: fine to read
        let logits = LogitsView::new(&x, DType::F32, 2, 4).with_sequences(1, 0);
        let inputs = LossInputs::new(
            logits,
            TargetsView::new(&y),
            F32View::new(&m),
            Advantages::PerToken(F32View::new(&a)),
        );
        for gradient in [
            Gradient::Into(GradView::like(&g, DType::F32, &logits)),
            Gradient::InPlace,
        ] {
            let mut enc = encoder(ctx);
            match loss.record(&mut enc, &inputs, gradient, &out.outputs()) {
                Err(Error::InvalidArgument { arg, .. }) if arg == "gradient" || arg == "logits" => {
                }
                other => {
                    let got = ctx
                        .read_back(enc, &[(&g, 16), (&x, 16), (&out.metrics, 4)])
                        .unwrap();
                    let f = |b: &[u8]| bytemuck::pod_collect_to_vec::<u8, f32>(b);
                    panic!(
                        "{what}: {} over rows that overlap: {other:?}, not an error; gradient \
                         buffer {:?}, logits after {:?}, loss {:?} (the reference: loss \
                         1.8692790, gradient summed over both rows [0.1542348, -0.4655855, \
                         0.1912325, 0.1201182])",
                        match gradient {
                            Gradient::InPlace => "Gradient::InPlace",
                            _ => "Gradient::Into",
                        },
                        f(&got[0]),
                        f(&got[1]),
                        f(&got[2]),
                    );
                }
            }
        }
    }
}

/// A view of 16-bit values that ends in the last, partial word of a buffer whose size
/// is not a multiple of 4 (3 f16 in a 6-byte buffer) passes validation, then binding
/// it fails inside wgpu ("binding size 6 ... expected to align to 4"): an
/// `Error::Wgpu`, not an `Err` naming the argument (nor a result).
#[test]
fn odd_sized_16bit_buffer_is_read_or_named() {
    let vals = [f16::from_f32(0.5), f16::from_f32(-1.0)];
    let want = reference::row_stats(&[0.5, -1.0, 0.0], 1, 1.0);
    for ctx in contexts() {
        let what = name(ctx);
        let x = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("6 bytes"),
            size: 6,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // the third f16 lies in the partial word, which the queue cannot write: it is 0
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        ctx.queue().write_buffer(&x, 0, &bytes);
        let y = storage(ctx, bytemuck::cast_slice(&[1u32]));
        let out = wgpu_policy_loss::RowStatsBuffers::new(ctx, 1);
        let mut enc = encoder(ctx);
        let r = ctx.record_row_stats(
            &mut enc,
            &LogitsView::new(&x, DType::F16, 1, 3),
            &TargetsView::new(&y),
            1.0,
            &out.outputs(),
        );
        match r {
            Ok(()) => {
                let got = ctx.read_back(enc, &[(&out.logp, 4)]).unwrap();
                let got = f32_at(&got[0], 0);
                close(got, want.logp, tolerance(4.0))
                    .unwrap_or_else(|e| panic!("{what}: logp: {e}"));
            }
            Err(Error::InvalidArgument { arg: "logits", .. }) => {}
            Err(e) => panic!("{what}: 3 f16 in a 6-byte buffer: {e:?}"),
        }
    }
}
