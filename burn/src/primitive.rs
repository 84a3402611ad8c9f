//! The log-prob primitive on Burn's wgpu backend: the library's `LogProbs` on the
//! tensors' own buffers, its statistics copied into one `[3, B, R]` tensor, and its
//! vector-Jacobian product into a `[B, S, V]` one (the logits form), or into
//! ∂L/∂hidden and ∂L/∂W (the head form).

use burn::backend::wgpu::{into_contiguous, CubeBackend, CubeTensor};
use wgpu_policy_loss::{
    wgpu, GradView, Gradient, HeadGradients, LogProbHeadInputs, LogProbInputs, LogitsView,
    TargetsView, Upstream,
};

use crate::backend::{ProbOp, ProbRows};
use crate::borrow::{self, Borrowed, Staged};
use crate::cube::{context, encoder, logits_in, rows_layout_of, submit, ResultBuffers};
use crate::head::HeadTensors;
use crate::meta::Spec;

type Error = wgpu_policy_loss::Error;

/// The per-row inputs and the upstream `[3, B, R]` borrowed and staged, in the order
/// targets, temperatures, upstream, keep offsets, keep ids.
struct Rows {
    _inputs: [Borrowed; 5],
    staged: Staged,
}

/// A call's per-row views: the ids at the predicted positions, the temperatures and
/// kept sets where given, and the upstream vectors.
type RowViews<'a> = (
    TargetsView<'a>,
    Option<wgpu_policy_loss::F32View<'a>>,
    Option<wgpu_policy_loss::KeptView<'a>>,
    Upstream<'a>,
);

impl Rows {
    fn new(
        (ctx, pool): (&wgpu_policy_loss::Context, &crate::pool::Pool),
        enc: &mut wgpu::CommandEncoder,
        rows: ProbRows<CubeBackend>,
        upstream: CubeTensor,
    ) -> Result<Self, Error> {
        let inputs = [
            Borrowed::new("targets", into_contiguous(rows.targets))?,
            Borrowed::new("temperatures", into_contiguous(rows.temperatures))?,
            Borrowed::new("upstream", into_contiguous(upstream))?,
            Borrowed::new("keep_offsets", into_contiguous(rows.keep_offsets))?,
            Borrowed::new("keep_ids", into_contiguous(rows.keep_ids))?,
        ];
        let staged = Staged::new(ctx, pool, enc, &inputs.iter().collect::<Vec<_>>());
        Ok(Rows {
            _inputs: inputs,
            staged,
        })
    }

    /// The views of `[B, S]` ids and `n` predicting rows.
    fn views(&self, seq_len: usize, n: u32, op: &ProbOp) -> Result<RowViews<'_>, Error> {
        let st = &self.staged;
        let p = op.positions.prompt_len() as u32;
        let r = op.positions.rows_per_seq(seq_len) as u32;
        let targets = TargetsView::response(&st.buffer, seq_len as u32, p, r)
            .with_byte_offset(st.offset(0))?;
        let up =
            |k: u64| wgpu_policy_loss::F32View::at(&st.buffer, st.offset(2) + k * n as u64 * 4);
        let upstream = Upstream {
            logprobs: Some(up(0)),
            entropy: Some(up(1)),
            lse: Some(up(2)),
        };
        let temps = op.has_temps.then(|| st.view(1));
        Ok((targets, temps, op.has_kept.then(|| st.kept(3)), upstream))
    }
}

/// Fresh Burn tensors for `specs`, borrowed.
fn borrowed_outputs(like: &CubeTensor, specs: &[Spec]) -> Result<Vec<Borrowed>, Error> {
    specs
        .iter()
        .map(|(shape, dtype)| Borrowed::new("outputs", borrow::empty(like, shape.clone(), *dtype)))
        .collect()
}

/// Runs the primitive on `logits` `[B, S, V]` for `upstream` `[3, B, R]`: with `Ok`
/// (the results' specs) its statistics and metrics, else its gradient (`Err`, the
/// logits' shape and dtype).
pub(crate) fn run(
    logits: CubeTensor,
    rows: ProbRows<CubeBackend>,
    upstream: CubeTensor,
    op: &ProbOp,
    want: Result<[Spec; 2], Spec>,
) -> Result<Vec<CubeTensor>, Error> {
    let (ctx, pool) = context(&logits)?;
    let prim = pool.logprobs(&ctx, &op.config)?;
    let (logits, dtype, [b, s, v]) = logits_in(logits)?;
    let out = match &want {
        Ok(specs) => borrowed_outputs(&logits, specs)?,
        Err(grad) => borrowed_outputs(&logits, std::slice::from_ref(grad))?,
    };
    let x = Borrowed::new("logits", logits)?;
    let mut enc = encoder(&ctx);
    let rows = Rows::new((&ctx, &pool), &mut enc, rows, upstream)?;
    let (n, layout) = rows_layout_of((b, s), &x.strides(), op.positions);
    let view = LogitsView {
        buffer: x.buffer(),
        dtype,
        rows: n,
        vocab: v as u32,
        layout,
    }
    .with_byte_offset(x.offset())?;
    let (targets, temperatures, kept, upstream) = rows.views(s, n, op)?;
    let call = LogProbInputs {
        kept,
        logits: view,
        targets,
        temperatures,
        upstream,
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
    drop((x, rows));
    Ok(out.into_iter().map(|b| b.tensor).collect())
}

/// [`run`] from hidden `[B, S, H]` and the weight `[V, H]`: with `Ok` its statistics
/// and metrics, else ∂L/∂hidden and ∂L/∂W (`Err`, their specs).
pub(crate) fn run_head(
    hidden: CubeTensor,
    weight: CubeTensor,
    rows: ProbRows<CubeBackend>,
    upstream: CubeTensor,
    op: &ProbOp,
    want: Result<[Spec; 2], [Spec; 2]>,
) -> Result<Vec<CubeTensor>, Error> {
    let (ctx, pool) = context(&hidden)?;
    let prim = pool.logprobs(&ctx, &op.config)?;
    let out = match &want {
        Ok(specs) | Err(specs) => borrowed_outputs(&hidden, specs)?,
    };
    let t = HeadTensors::new(hidden, weight)?;
    let mut enc = encoder(&ctx);
    let rows = Rows::new((&ctx, &pool), &mut enc, rows, upstream)?;
    let [hidden_view, lm_head] = t.views(op.positions)?;
    let n = hidden_view.rows;
    let (targets, temperatures, kept, upstream) = rows.views(t.dims[1], n, op)?;
    let call = LogProbHeadInputs {
        hidden: hidden_view,
        lm_head: lm_head.into(),
        targets,
        temperatures,
        kept,
        upstream,
        chunk_rows: op.chunk_rows,
    };
    let bufs = ResultBuffers::new(&ctx, &pool, n);
    let g = match &want {
        Ok(_) => None,
        Err(_) => Some(t.grad_buffers(&ctx, &pool, &mut enc)),
    };
    let grads = match &g {
        Some(g) => t.grad_views(g, op.positions)?,
        None => HeadGradients::default(),
    };
    prim.record_head(&mut enc, &call, &grads, &bufs.outputs())?;
    match &g {
        None => copy_stats(&mut enc, &bufs, &out, n),
        Some([gh, gw]) => {
            borrow::copy_out(&mut enc, gh, 0, &out[0]);
            borrow::copy_out(&mut enc, gw, 0, &out[1]);
        }
    }
    submit(&ctx, &t.x.tensor, enc)?;
    drop((t, rows));
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
