//! The log-prob primitive on Burn's wgpu backend: the library's `LogProbs` on the
//! tensors' own buffers, its statistics copied into one `[3, B, R]` tensor, and its
//! vector-Jacobian product into a `[B, S, V]` one.

use burn::backend::wgpu::{into_contiguous, CubeTensor};
use wgpu_policy_loss::{
    wgpu, GradView, Gradient, LogProbInputs, LogitsView, TargetsView, Upstream,
};

use crate::backend::{ProbOp, ProbRows};
use crate::borrow::{self, Borrowed, Staged};
use crate::cube::{context, encoder, logits_in, rows_layout_of, submit, ResultBuffers};
use crate::meta::Spec;

type Error = wgpu_policy_loss::Error;

/// Runs the primitive on `logits` `[B, S, V]` for `upstream` `[3, B, R]`: with `stats`
/// (the results' specs) its statistics and metrics, else its gradient (`grad`, the
/// logits' shape and dtype).
pub(crate) fn run(
    logits: CubeTensor,
    rows: ProbRows<burn::backend::wgpu::CubeBackend>,
    upstream: CubeTensor,
    op: &ProbOp,
    want: Result<[Spec; 2], Spec>,
) -> Result<Vec<CubeTensor>, Error> {
    let (ctx, pool) = context(&logits)?;
    let prim = pool.logprobs(&ctx, &op.config)?;
    let (logits, dtype, [b, s, v]) = logits_in(logits)?;
    let outs: Vec<CubeTensor> = match &want {
        Ok(specs) => crate::cube::outputs(&logits, specs.clone()).to_vec(),
        Err(grad) => crate::cube::outputs(&logits, [grad.clone()]).to_vec(),
    };
    let x = Borrowed::new("logits", logits)?;
    let out: Vec<Borrowed> = outs
        .into_iter()
        .map(|t| Borrowed::new("outputs", t))
        .collect::<Result<_, _>>()?;
    let inputs = [
        Borrowed::new("targets", into_contiguous(rows.targets))?,
        Borrowed::new("temperatures", into_contiguous(rows.temperatures))?,
        Borrowed::new("upstream", into_contiguous(upstream))?,
        Borrowed::new("keep_offsets", into_contiguous(rows.keep_offsets))?,
        Borrowed::new("keep_ids", into_contiguous(rows.keep_ids))?,
    ];
    let mut enc = encoder(&ctx);
    let staged = Staged::new(&ctx, &pool, &mut enc, &inputs.iter().collect::<Vec<_>>());
    let (n, layout) = rows_layout_of((b, s), &x.strides(), op.positions);
    let view = LogitsView {
        buffer: x.buffer(),
        dtype,
        rows: n,
        vocab: v as u32,
        layout,
    }
    .with_byte_offset(x.offset())?;
    let p = op.positions.prompt_len() as u32;
    let r = op.positions.rows_per_seq(s) as u32;
    let targets =
        TargetsView::response(&staged.buffer, s as u32, p, r).with_byte_offset(staged.offset(0))?;
    let up =
        |k: u64| wgpu_policy_loss::F32View::at(&staged.buffer, staged.offset(2) + k * n as u64 * 4);
    let call = LogProbInputs {
        kept: op.has_kept.then(|| staged.kept(3)),
        logits: view,
        targets,
        temperatures: op.has_temps.then(|| staged.view(1)),
        upstream: Upstream {
            logprobs: Some(up(0)),
            entropy: Some(up(1)),
            lse: Some(up(2)),
        },
    };
    let bufs = ResultBuffers::new(&ctx, &pool, n);
    let gradient = match &want {
        Ok(_) => Gradient::None,
        Err(_) => gradient(&mut enc, &out[0], dtype, (b, s, v), op)?,
    };
    prim.record(&mut enc, &call, gradient, &bufs.outputs())?;
    if want.is_ok() {
        copy_stats(&mut enc, &bufs, &out, n);
    }
    submit(&ctx, &x.tensor, enc)?;
    drop((x, inputs));
    Ok(out.into_iter().map(|b| b.tensor).collect())
}

/// The gradient `[B, S, V]` into `g` at the predicting rows (the others cleared).
fn gradient<'a>(
    enc: &mut wgpu::CommandEncoder,
    g: &'a Borrowed,
    dtype: wgpu_policy_loss::DType,
    (b, s, v): (usize, usize, usize),
    op: &ProbOp,
) -> Result<Gradient<'a>, Error> {
    if op.positions != crate::Positions::Aligned {
        enc.clear_buffer(g.buffer(), g.offset(), Some(g.copy_bytes()));
    }
    let (n, layout) = rows_layout_of((b, s), &g.strides(), op.positions);
    let at = LogitsView {
        buffer: g.buffer(),
        dtype,
        rows: n,
        vocab: v as u32,
        layout,
    }
    .with_byte_offset(g.offset())?;
    Ok(Gradient::Into(GradView::like(g.buffer(), dtype, &at)))
}

/// logp, H and lse one after the other in the `[3, B, R]` tensor, and the metrics.
fn copy_stats(enc: &mut wgpu::CommandEncoder, bufs: &ResultBuffers, out: &[Borrowed], n: u32) {
    let (stats, bytes) = (&out[0], n as u64 * 4);
    for (k, src) in [&bufs.logprobs, &bufs.entropy, &bufs.lse]
        .into_iter()
        .enumerate()
    {
        let at = stats.offset() + k as u64 * bytes;
        enc.copy_buffer_to_buffer(src, 0, stats.buffer(), at, bytes);
    }
    borrow::copy_out(enc, &bufs.metrics, 0, &out[1]);
}
