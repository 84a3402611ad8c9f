//! The fused linear head on Burn's wgpu backend: the loss from hidden states and the
//! lm-head weight read in Burn's buffers, the `[T, V]` logits made a chunk of rows at
//! a time in the library's own buffer.
//!
//! The gradients are written into buffers of the library's and copied into Burn's
//! tensors: the head's kernels read hidden and the weight while they write, and either
//! may share a CubeCL page with a fresh gradient tensor. The copies are `[B, S, H]`
//! and `[V, H]`, small beside the matmuls.

use burn::backend::wgpu::{CubeBackend, CubeTensor};
use wgpu_policy_loss::{
    wgpu, Context, HeadGradients, HeadInputs, LogitsView, MatrixView, RowLayout,
};

use crate::backend::{LossOp, RowInputs};
use crate::borrow::{self, copy_out, Borrowed};
use crate::cube::{
    context, copy_results, outputs, rows_layout, submit, Call, ResultBuffers, RowViews,
};
use crate::meta::Spec;
use crate::pool::Pool;

type Error = wgpu_policy_loss::Error;

/// A buffer of the crate's for one gradient of `bytes`, zeroed in `enc` (rows no view
/// covers keep their 0).
fn grad_buffer(
    ctx: &Context,
    pool: &Pool,
    enc: &mut wgpu::CommandEncoder,
    label: &'static str,
    bytes: u64,
) -> wgpu::Buffer {
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let b = pool.buffer(ctx, label, bytes, usage);
    enc.clear_buffer(&b, 0, Some(bytes.div_ceil(4) * 4));
    b
}

pub(crate) fn forward(
    hidden: CubeTensor,
    weight: CubeTensor,
    rows: RowInputs<CubeBackend>,
    op: &LossOp,
    specs: [Spec; 7],
) -> Result<[CubeTensor; 7], Error> {
    let (ctx, pool) = context(&hidden)?;
    let loss_fn = pool.loss(&ctx, &op.config)?;
    let (hidden, weight) = (
        borrow::columns_contiguous(hidden),
        borrow::columns_contiguous(weight),
    );
    let hs = hidden.meta.shape().clone();
    let (b, s, h) = (hs[0], hs[1], hs[2]);
    let v = weight.meta.shape()[0];
    let dtype = borrow::dtype(hidden.dtype).ok_or_else(|| Error::InvalidArgument {
        arg: "hidden",
        reason: format!("is {:?}: f32, f16 or bf16", hidden.dtype),
    })?;
    let out = outputs(&hidden, specs);
    let (x, w) = (
        Borrowed::new("hidden", hidden)?,
        Borrowed::new("weight", weight)?,
    );
    let Call {
        mut enc,
        rows,
        out,
        staged,
    } = Call::new(&ctx, &pool, rows, out)?;
    let (n, layout) = rows_layout((b, s), &x.strides(), op);
    let matrix = |buffer, rows, cols, layout, at| -> Result<MatrixView<'_>, Error> {
        let view = LogitsView {
            buffer,
            dtype,
            rows,
            vocab: cols,
            layout,
        };
        Ok(MatrixView::from_rows(view.with_byte_offset(at)?))
    };
    let dense = |cols: usize| RowLayout {
        offset: 0,
        row_stride: cols as u64,
        rows_per_seq: u32::MAX,
        seq_stride: 0,
    };
    let hidden_view = matrix(x.buffer(), n, h as u32, layout, x.offset())?;
    let w_layout = RowLayout {
        row_stride: w.strides()[0] as u64,
        ..dense(h)
    };
    let weight_view = matrix(w.buffer(), v as u32, h as u32, w_layout, w.offset())?;
    let rv = RowViews::new(&staged, s, op)?;
    let mut inputs = HeadInputs::new(hidden_view, weight_view, rv.targets, rv.mask, rv.advantages);
    inputs.old_logprobs = rv.old;
    inputs.ref_logprobs = rv.refp;
    inputs.rollout_logprobs = rv.rollout;
    inputs.temperatures = rv.temps;
    inputs.kept = rv.kept;
    inputs.chunk_rows = op.chunk_rows;
    let size = dtype.size();
    let gh = grad_buffer(
        &ctx,
        &pool,
        &mut enc,
        "burn head dhidden",
        (b * s * h) as u64 * size,
    );
    let gw = grad_buffer(
        &ctx,
        &pool,
        &mut enc,
        "burn head dweight",
        (v * h) as u64 * size,
    );
    let grads = if op.want_grad {
        let gh_layout = rows_layout((b, s), &[s * h, h, 1], op).1;
        HeadGradients {
            hidden: Some(matrix(&gh, n, h as u32, gh_layout, 0)?),
            lm_head: Some(matrix(&gw, v as u32, h as u32, dense(h), 0)?.into()),
        }
    } else {
        HeadGradients::default()
    };
    let bufs = ResultBuffers::new(&ctx, &pool, n);
    loss_fn.record_head(&mut enc, &inputs, &grads, &bufs.outputs())?;
    copy_results(&mut enc, &bufs, &out);
    if op.want_grad {
        copy_out(&mut enc, &gh, 0, &out[5]);
        copy_out(&mut enc, &gw, 0, &out[6]);
    }
    submit(&ctx, &x.tensor, enc)?;
    drop((x, w, rows));
    Ok(out
        .into_iter()
        .map(|b| b.tensor)
        .collect::<Vec<_>>()
        .try_into()
        .expect("seven results"))
}
