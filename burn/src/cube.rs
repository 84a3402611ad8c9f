//! The op on Burn's wgpu backend: the library's kernels record into an encoder of
//! their own, on the queue Burn's runtime submits to, reading the logits in Burn's
//! buffer in place and writing the gradient into a tensor Burn allocated.
//!
//! Ordering is the queue's: `client.flush()` puts Burn's pending work (the forward
//! that wrote the logits) on the queue first, and everything Burn records after this
//! call is submitted after ours.

use burn::backend::wgpu::CubeBackend;
use burn::backend::wgpu::{into_contiguous, CubeTensor};
use burn::tensor::{DType as BurnDType, Shape};
use wgpu_policy_loss::{
    wgpu, Advantages, Context, F32View, GradView, Gradient, LogitsView, LossInputs, LossOutputs,
    LossPart, Metrics, RowLayout, TargetsView,
};

use crate::backend::{
    AdvantagesOp, CallId, HeadResults, LossOp, LossResults, PolicyLossBackend, ProbHeadGrads,
    ProbOp, ProbResults, ProbRows, RowInputs,
};
use crate::borrow::{self, copy_out, Borrowed, Staged};
use crate::device;
use crate::meta::{self, Spec};
use crate::pool::Pool;
use std::sync::Arc;

type Error = wgpu_policy_loss::Error;

/// The per-row inputs' buffers, in the order [`Staged`] holds them.
pub(crate) fn borrow_rows(rows: RowInputs<CubeBackend>) -> Result<Vec<Borrowed>, Error> {
    let names = [
        "targets",
        "mask",
        "advantages",
        "old_logprobs",
        "ref_logprobs",
    ];
    let names = names.into_iter().chain([
        "rollout_logprobs",
        "temperatures",
        "keep_offsets",
        "keep_ids",
    ]);
    let r = rows;
    [
        r.targets,
        r.mask,
        r.advantages,
        r.old_logprobs,
        r.ref_logprobs,
        r.rollout_logprobs,
        r.temperatures,
        r.keep_offsets,
        r.keep_ids,
    ]
    .into_iter()
    .zip(names)
    .map(|(t, name)| Borrowed::new(name, into_contiguous(t)))
    .collect()
}

/// The row layout of `[B, S, ·]` rows with strides `[sb, ss, 1]` (elements), for
/// `positions`: the rows that predict, grouped per sequence.
pub(crate) fn rows_layout(b_s: (usize, usize), strides: &[usize], op: &LossOp) -> (u32, RowLayout) {
    rows_layout_of(b_s, strides, op.positions)
}

/// [`rows_layout`] for `positions`.
pub(crate) fn rows_layout_of(
    b_s: (usize, usize),
    strides: &[usize],
    positions: crate::Positions,
) -> (u32, RowLayout) {
    let (b, s) = b_s;
    let p = positions.prompt_len();
    let r = positions.rows_per_seq(s);
    let layout = RowLayout {
        offset: (p.saturating_sub(1) * strides[1]) as u64,
        row_stride: strides[1] as u64,
        rows_per_seq: r.max(1) as u32,
        seq_stride: strides[0] as u64,
    };
    ((b * r) as u32, layout)
}

/// The per-row inputs as the library's views: `[B, S]` ids read at the predicted
/// positions, `[B, R]` (or `[B]`) f32 values dense.
pub(crate) struct RowViews<'a> {
    pub targets: TargetsView<'a>,
    pub mask: F32View<'a>,
    pub advantages: Advantages<'a>,
    pub old: Option<F32View<'a>>,
    pub refp: Option<F32View<'a>>,
    pub rollout: Option<F32View<'a>>,
    pub temps: Option<F32View<'a>>,
    pub kept: Option<wgpu_policy_loss::KeptView<'a>>,
}

impl<'a> RowViews<'a> {
    pub fn new(staged: &'a Staged, seq_len: usize, op: &LossOp) -> Result<Self, Error> {
        let p = op.positions.prompt_len() as u32;
        let r = op.positions.rows_per_seq(seq_len) as u32;
        let targets = TargetsView::response(&staged.buffer, seq_len as u32, p, r)
            .with_byte_offset(staged.offset(0))?;
        let advantages = if op.per_token_advantages {
            Advantages::PerToken(staged.view(2))
        } else {
            Advantages::PerSequence(staged.view(2))
        };
        let given = |on: bool, i: usize| on.then(|| staged.view(i));
        Ok(RowViews {
            targets,
            mask: staged.view(1),
            advantages,
            old: given(op.has_old, 3),
            refp: given(op.has_ref, 4),
            rollout: given(op.has_rollout, 5),
            temps: given(op.has_temps, 6),
            kept: op.has_kept.then(|| staged.kept(7)),
        })
    }

    fn part(&self, logits: LogitsView<'a>, gradient: Gradient<'a>) -> LossPart<'a> {
        let mut inputs = LossInputs::new(logits, self.targets, self.mask, self.advantages);
        inputs.old_logprobs = self.old;
        inputs.ref_logprobs = self.refp;
        inputs.temperatures = self.temps;
        inputs.kept = self.kept;
        let mut part = LossPart::new(inputs, gradient);
        part.rollout_logprobs = self.rollout;
        part
    }
}

/// Fresh Burn tensors for `specs`, on `like`'s device.
pub(crate) fn outputs<const N: usize>(like: &CubeTensor, specs: [Spec; N]) -> [CubeTensor; N] {
    specs.map(|(shape, dtype)| borrow::empty(like, shape, dtype))
}

/// Copies the loss buffers' results into the Burn tensors `[loss, logp, ent, lse,
/// metrics]` (the loss is the metrics' first value).
pub(crate) fn copy_results(enc: &mut wgpu::CommandEncoder, bufs: &ResultBuffers, out: &[Borrowed]) {
    copy_out(enc, &bufs.metrics, 0, &out[0]);
    copy_out(enc, &bufs.logprobs, 0, &out[1]);
    copy_out(enc, &bufs.entropy, 0, &out[2]);
    copy_out(enc, &bufs.lse, 0, &out[3]);
    copy_out(enc, &bufs.metrics, 0, &out[4]);
}

/// Submits `encoder` after Burn's pending work.
pub(crate) fn submit(
    ctx: &Context,
    like: &CubeTensor,
    encoder: wgpu::CommandEncoder,
) -> Result<(), Error> {
    like.client
        .flush()
        .map_err(|e| Error::Wgpu(format!("Burn's queue did not flush: {e:?}")))?;
    ctx.queue().submit([encoder.finish()]);
    Ok(())
}

pub(crate) fn encoder(ctx: &Context) -> wgpu::CommandEncoder {
    ctx.device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-policy-loss-burn"),
        })
}

/// The results where a call failed (f32 ones NaN), and the error kept for the checked
/// caller, which returns it instead of any of them.
fn failed<const N: usize>(
    like: &CubeTensor,
    specs: [Spec; N],
    (call, e): (CallId, Error),
) -> [CubeTensor; N] {
    use burn::backend::ops::FloatTensorOps;
    device::record_error(call, e);
    specs.map(|(shape, dtype)| match dtype {
        BurnDType::F32 => {
            CubeBackend::float_full(shape, f32::NAN.into(), &like.device, dtype.into())
        }
        _ => borrow::empty(like, shape, dtype),
    })
}

/// A call's buffers on the way in: the per-row inputs staged in `enc`, and the
/// results' Burn tensors.
pub(crate) struct Call {
    pub enc: wgpu::CommandEncoder,
    pub rows: Vec<Borrowed>,
    pub out: Vec<Borrowed>,
    pub staged: Staged,
}

impl Call {
    pub fn new<const N: usize>(
        ctx: &Context,
        pool: &Pool,
        rows: RowInputs<CubeBackend>,
        out: [CubeTensor; N],
    ) -> Result<Self, Error> {
        let rows = borrow_rows(rows)?;
        let out: Vec<Borrowed> = out
            .into_iter()
            .map(|t| Borrowed::new("outputs", t))
            .collect::<Result<_, _>>()?;
        let mut enc = encoder(ctx);
        let staged = Staged::new(ctx, pool, &mut enc, &rows.iter().collect::<Vec<_>>());
        Ok(Call {
            enc,
            rows,
            out,
            staged,
        })
    }
}

/// Where a call's loss, metrics, log-probs, entropies and lse land before their
/// copies into Burn's tensors.
pub(crate) struct ResultBuffers {
    pub metrics: wgpu::Buffer,
    pub logprobs: wgpu::Buffer,
    pub entropy: wgpu::Buffer,
    pub lse: wgpu::Buffer,
}

impl ResultBuffers {
    pub fn new(ctx: &Context, pool: &Pool, rows: u32) -> Self {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let rows = rows as u64 * 4;
        ResultBuffers {
            metrics: pool.buffer(ctx, "burn metrics", Metrics::LEN as u64 * 4, usage),
            logprobs: pool.buffer(ctx, "burn logprobs", rows, usage),
            entropy: pool.buffer(ctx, "burn entropy", rows, usage),
            lse: pool.buffer(ctx, "burn lse", rows, usage),
        }
    }

    pub fn outputs(&self) -> LossOutputs<'_> {
        LossOutputs {
            metrics: F32View::new(&self.metrics),
            logprobs: Some(F32View::new(&self.logprobs)),
            entropy: Some(F32View::new(&self.entropy)),
            lse: Some(F32View::new(&self.lse)),
        }
    }
}

pub(crate) fn context(like: &CubeTensor) -> Result<(Context, Arc<Pool>), Error> {
    device::context(&like.device)
        .ok_or_else(|| Error::Wgpu(format!("{:?} is not registered for the loss", like.device)))
}

/// Logits `[B, S, V]` as the kernels take them (contiguous columns), their dtype and
/// dimensions, or an error naming them.
pub(crate) fn logits_in(
    logits: CubeTensor,
) -> Result<(CubeTensor, wgpu_policy_loss::DType, [usize; 3]), Error> {
    let shape = logits.meta.shape().clone();
    let dims = [shape[0], shape[1], shape[2]];
    let logits = borrow::columns_contiguous(logits);
    let dtype = borrow::dtype(logits.dtype).ok_or_else(|| Error::InvalidArgument {
        arg: "logits",
        reason: format!("is {:?}: f32, f16 or bf16", logits.dtype),
    })?;
    Ok((logits, dtype, dims))
}

fn loss_forward(
    logits: CubeTensor,
    rows: RowInputs<CubeBackend>,
    op: &LossOp,
    specs: [Spec; 6],
) -> Result<[CubeTensor; 6], Error> {
    let (ctx, pool) = context(&logits)?;
    let loss_fn = pool.loss(&ctx, &op.config)?;
    let (logits, dtype, [b, s, v]) = logits_in(logits)?;
    let out = outputs(&logits, specs);
    let x = Borrowed::new("logits", logits)?;
    let Call {
        mut enc,
        rows,
        out,
        staged,
    } = Call::new(&ctx, &pool, rows, out)?;
    let (n, layout) = rows_layout((b, s), &x.strides(), op);
    let view = LogitsView {
        buffer: x.buffer(),
        dtype,
        rows: n,
        vocab: v as u32,
        layout,
    }
    .with_byte_offset(x.offset())?;
    let g = &out[5];
    // rows that predict nothing (the shift's last position, the prompt) have gradient
    // 0, and the kernels write only the rows that predict
    if op.want_grad && op.positions != crate::Positions::Aligned {
        enc.clear_buffer(g.buffer(), g.offset(), Some(g.copy_bytes()));
    }
    let gradient = if op.want_grad {
        let layout = rows_layout((b, s), &g.strides(), op).1;
        let at = LogitsView {
            buffer: g.buffer(),
            dtype,
            rows: n,
            vocab: v as u32,
            layout,
        }
        .with_byte_offset(g.offset())?;
        Gradient::Into(GradView::like(g.buffer(), dtype, &at))
    } else {
        Gradient::None
    };
    let part = RowViews::new(&staged, s, op)?.part(view, gradient);
    let bufs = ResultBuffers::new(&ctx, &pool, n);
    loss_fn.record_parts(&mut enc, &[part], &bufs.outputs())?;
    copy_results(&mut enc, &bufs, &out);
    submit(&ctx, &x.tensor, enc)?;
    drop((x, rows));
    Ok(out
        .into_iter()
        .map(|b| b.tensor)
        .collect::<Vec<_>>()
        .try_into()
        .expect("six results"))
}

impl PolicyLossBackend for CubeBackend {
    fn policy_loss(logits: CubeTensor, rows: RowInputs<Self>, op: LossOp) -> LossResults<Self> {
        let specs = meta::loss_results(logits.meta.shape(), logits.dtype, &op);
        let like = logits.clone();
        let [loss, logprobs, entropy, lse, metrics, grad] =
            loss_forward(logits, rows, &op, specs.clone())
                .unwrap_or_else(|err| failed(&like, specs, (op.call, err)));
        LossResults {
            loss,
            logprobs,
            entropy,
            lse,
            metrics,
            grad,
        }
    }

    fn policy_loss_head(
        hidden: CubeTensor,
        weight: CubeTensor,
        rows: RowInputs<Self>,
        op: LossOp,
    ) -> HeadResults<Self> {
        let specs = meta::head_results(hidden.meta.shape(), weight.meta.shape(), hidden.dtype, &op);
        let like = hidden.clone();
        let [loss, logprobs, entropy, lse, metrics, grad_hidden, grad_weight] =
            crate::head::forward(hidden, weight, rows, &op, specs.clone())
                .unwrap_or_else(|err| failed(&like, specs, (op.call, err)));
        HeadResults {
            loss,
            logprobs,
            entropy,
            lse,
            metrics,
            grad_hidden,
            grad_weight,
        }
    }

    fn logprobs(
        logits: CubeTensor,
        rows: ProbRows<Self>,
        upstream: CubeTensor,
        op: ProbOp,
    ) -> ProbResults<Self> {
        let specs = meta::prob_results(logits.meta.shape(), op.positions);
        let like = logits.clone();
        let [stats, metrics] =
            crate::primitive::run(logits, rows, upstream, &op, Ok(specs.clone()))
                .map(|v| [v[0].clone(), v[1].clone()])
                .unwrap_or_else(|err| failed(&like, specs, (op.call, err)));
        ProbResults { stats, metrics }
    }

    fn logprobs_grad(
        logits: CubeTensor,
        rows: ProbRows<Self>,
        upstream: CubeTensor,
        op: ProbOp,
    ) -> CubeTensor {
        let spec = (logits.meta.shape().clone(), logits.dtype);
        let like = logits.clone();
        crate::primitive::run(logits, rows, upstream, &op, Err(spec.clone()))
            .map(|mut v| v.remove(0))
            .unwrap_or_else(|err| failed(&like, [spec], (op.call, err))[0].clone())
    }

    fn logprobs_head(
        hidden: CubeTensor,
        weight: CubeTensor,
        rows: ProbRows<Self>,
        upstream: CubeTensor,
        op: ProbOp,
    ) -> ProbResults<Self> {
        let specs = meta::prob_head_results(hidden.meta.shape(), op.positions);
        let like = hidden.clone();
        let [stats, metrics] =
            crate::primitive::run_head(hidden, weight, rows, upstream, &op, Ok(specs.clone()))
                .map(|v| [v[0].clone(), v[1].clone()])
                .unwrap_or_else(|err| failed(&like, specs, (op.call, err)));
        ProbResults { stats, metrics }
    }

    fn logprobs_head_grad(
        hidden: CubeTensor,
        weight: CubeTensor,
        rows: ProbRows<Self>,
        upstream: CubeTensor,
        op: ProbOp,
    ) -> ProbHeadGrads<Self> {
        let specs = meta::prob_head_grads(hidden.meta.shape(), weight.meta.shape(), hidden.dtype);
        let like = hidden.clone();
        let [grad_hidden, grad_weight] =
            crate::primitive::run_head(hidden, weight, rows, upstream, &op, Err(specs.clone()))
                .map(|v| [v[0].clone(), v[1].clone()])
                .unwrap_or_else(|err| failed(&like, specs, (op.call, err)));
        ProbHeadGrads {
            grad_hidden,
            grad_weight,
        }
    }

    fn advantages(rewards: CubeTensor, op: AdvantagesOp) -> CubeTensor {
        let spec = (rewards.meta.shape().clone(), BurnDType::F32);
        let like = rewards.clone();
        advantages_forward(rewards, op, spec.clone())
            .unwrap_or_else(|err| failed(&like, [spec], (CallId::default(), err))[0].clone())
    }
}

fn advantages_forward(
    rewards: CubeTensor,
    op: AdvantagesOp,
    spec: (Shape, BurnDType),
) -> Result<CubeTensor, Error> {
    let (ctx, pool) = context(&rewards)?;
    let n = spec.0.num_elements() as u32;
    let [out] = outputs(&rewards, [spec]);
    let r = [Borrowed::new("rewards", into_contiguous(rewards))?];
    let out = Borrowed::new("advantages", out)?;
    let mut enc = encoder(&ctx);
    let staged = Staged::new(&ctx, &pool, &mut enc, &[&r[0]]);
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let scratch = pool.buffer(&ctx, "burn advantages", out.copy_bytes(), usage);
    let dst = wgpu_policy_loss::F32View::new(&scratch);
    ctx.record_advantages(
        &mut enc,
        op.estimator,
        &staged.view(0),
        n,
        op.group_size as u32,
        &dst,
    )?;
    copy_out(&mut enc, &scratch, 0, &out);
    submit(&ctx, &out.tensor, enc)?;
    Ok(out.tensor.clone())
}
