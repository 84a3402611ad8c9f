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
    wgpu, Context, DType, HeadGradients, HeadInputs, LogitsView, MatrixView, RowLayout,
};

use crate::backend::{LossOp, Positions, RowInputs};
use crate::borrow::{self, copy_out, Borrowed};
use crate::cube::{
    context, copy_results, outputs, rows_layout_of, submit, Call, ResultBuffers, RowViews,
};
use crate::meta::Spec;
use crate::pool::Pool;

type Error = wgpu_policy_loss::Error;

/// Hidden `[B, S, H]` and the weight `[V, H]` borrowed in Burn's buffers, with the
/// buffers of the crate's their gradients are written into.
pub(crate) struct HeadTensors {
    pub x: Borrowed,
    pub w: Borrowed,
    pub dtype: DType,
    /// `[B, S, H, V]`.
    pub dims: [usize; 4],
}

impl HeadTensors {
    pub fn new(hidden: CubeTensor, weight: CubeTensor) -> Result<Self, Error> {
        let (hidden, weight) = (
            borrow::columns_contiguous(hidden),
            borrow::columns_contiguous(weight),
        );
        let hs = hidden.meta.shape().clone();
        let v = weight.meta.shape()[0];
        let dtype = borrow::dtype(hidden.dtype).ok_or_else(|| Error::InvalidArgument {
            arg: "hidden",
            reason: format!("is {:?}: f32, f16 or bf16", hidden.dtype),
        })?;
        Ok(HeadTensors {
            x: Borrowed::new("hidden", hidden)?,
            w: Borrowed::new("weight", weight)?,
            dtype,
            dims: [hs[0], hs[1], hs[2], v],
        })
    }

    /// `rows × cols` of `buffer` from byte `at`, as the library's matrix.
    fn matrix<'a>(
        &self,
        buffer: &'a wgpu::Buffer,
        (rows, cols): (u32, usize),
        layout: RowLayout,
        at: u64,
    ) -> Result<MatrixView<'a>, Error> {
        let view = LogitsView {
            buffer,
            dtype: self.dtype,
            rows,
            vocab: cols as u32,
            layout,
        };
        Ok(MatrixView::from_rows(view.with_byte_offset(at)?))
    }

    /// Hidden's predicting rows and the weight's rows, as the library's matrices.
    pub fn views(&self, positions: Positions) -> Result<[MatrixView<'_>; 2], Error> {
        let [b, s, h, v] = self.dims;
        let (n, layout) = rows_layout_of((b, s), &self.x.strides(), positions);
        let hidden = self.matrix(self.x.buffer(), (n, h), layout, self.x.offset())?;
        let w_layout = RowLayout {
            row_stride: self.w.strides()[0] as u64,
            ..dense(h)
        };
        let weight = self.matrix(self.w.buffer(), (v as u32, h), w_layout, self.w.offset())?;
        Ok([hidden, weight])
    }

    /// Zeroed buffers for ∂L/∂hidden and ∂L/∂W (rows no view covers keep their 0).
    pub fn grad_buffers(
        &self,
        ctx: &Context,
        pool: &Pool,
        enc: &mut wgpu::CommandEncoder,
    ) -> [wgpu::Buffer; 2] {
        let [b, s, h, v] = self.dims;
        let size = self.dtype.size();
        [
            ("burn head dhidden", (b * s * h) as u64 * size),
            ("burn head dweight", (v * h) as u64 * size),
        ]
        .map(|(label, bytes)| grad_buffer(ctx, pool, enc, label, bytes))
    }

    /// The two gradient buffers as the head's outputs, hidden's at its predicting rows.
    pub fn grad_views<'a>(
        &self,
        [gh, gw]: &'a [wgpu::Buffer; 2],
        positions: Positions,
    ) -> Result<HeadGradients<'a>, Error> {
        let [b, s, h, v] = self.dims;
        let (n, gh_layout) = rows_layout_of((b, s), &[s * h, h, 1], positions);
        Ok(HeadGradients {
            hidden: Some(self.matrix(gh, (n, h), gh_layout, 0)?),
            lm_head: Some(self.matrix(gw, (v as u32, h), dense(h), 0)?.into()),
        })
    }
}

/// Dense rows of `cols` elements.
fn dense(cols: usize) -> RowLayout {
    RowLayout {
        offset: 0,
        row_stride: cols as u64,
        rows_per_seq: u32::MAX,
        seq_stride: 0,
    }
}

/// A buffer of the crate's for one gradient of `bytes`, zeroed in `enc`.
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
    let out = outputs(&hidden, specs);
    let t = HeadTensors::new(hidden, weight)?;
    let Call {
        mut enc,
        rows,
        out,
        staged,
    } = Call::new(&ctx, &pool, rows, out)?;
    let [hidden_view, weight_view] = t.views(op.positions)?;
    let rv = RowViews::new(&staged, t.dims[1], op)?;
    let bufs = ResultBuffers::new(&ctx, &pool, hidden_view.rows);
    let mut inputs = HeadInputs::new(hidden_view, weight_view, rv.targets, rv.mask, rv.advantages);
    inputs.old_logprobs = rv.old;
    inputs.ref_logprobs = rv.refp;
    inputs.rollout_logprobs = rv.rollout;
    inputs.temperatures = rv.temps;
    inputs.kept = rv.kept;
    inputs.chunk_rows = op.chunk_rows;
    let g = t.grad_buffers(&ctx, &pool, &mut enc);
    let grads = if op.want_grad {
        t.grad_views(&g, op.positions)?
    } else {
        HeadGradients::default()
    };
    loss_fn.record_head(&mut enc, &inputs, &grads, &bufs.outputs())?;
    copy_results(&mut enc, &bufs, &out);
    if op.want_grad {
        copy_out(&mut enc, &g[0], 0, &out[5]);
        copy_out(&mut enc, &g[1], 0, &out[6]);
    }
    submit(&ctx, &t.x.tensor, enc)?;
    drop((t, rows));
    Ok(out
        .into_iter()
        .map(|b| b.tensor)
        .collect::<Vec<_>>()
        .try_into()
        .expect("seven results"))
}
