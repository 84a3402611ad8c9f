//! `bench --head`: the fused linear head against the unfused path on the same buffers
//! (our matmul to the whole `[T, V]` f32 logits, our loss with its gradient over them
//! in place, our matmuls back), the extra device memory each allocates, and the
//! matmuls' GFLOP/s.

use std::time::Duration;

use super::{time, Timing};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::matmul::{self, Operand, Product};
use crate::loss::{
    Advantages, Gradient, HeadGradients, HeadInputs, LossBuffers, LossInputs, MatrixView,
    PolicyLoss,
};
use crate::view::{DType, F32View, LogitsView, TargetsView};
use crate::LossConfig;

/// A head shape: `rows` hidden states of `hidden` values, a vocabulary of `vocab`, the
/// inputs in `dtype` (both gradients f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadBenchShape {
    pub rows: u32,
    pub hidden: u32,
    pub vocab: u32,
    pub dtype: DType,
}

impl HeadBenchShape {
    /// The shapes: Qwen2.5-0.5B's head at 4096 and 16384 tokens, and a 32k
    /// vocabulary at H = 2048.
    pub fn defaults() -> Vec<HeadBenchShape> {
        [
            (4096, 896, 151936),
            (2048, 2048, 32000),
            (16384, 896, 151936),
        ]
        .into_iter()
        .map(|(rows, hidden, vocab)| HeadBenchShape {
            rows,
            hidden,
            vocab,
            dtype: DType::Bf16,
        })
        .collect()
    }

    /// FLOPs of one product `[T, H] × [H, V]` (a multiply and an add each).
    pub fn matmul_flops(&self) -> f64 {
        2.0 * self.rows as f64 * self.hidden as f64 * self.vocab as f64
    }
}

impl std::fmt::Display for HeadBenchShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, h, v) = (self.rows, self.hidden, self.vocab);
        write!(f, "{t}x{h}x{v} {}", self.dtype)
    }
}

/// One head shape measured: forward + backward fused and unfused, the forward matmul
/// alone, and the extra device memory of each path.
#[derive(Clone, Debug)]
pub struct HeadRow {
    pub adapter: String,
    pub shape: HeadBenchShape,
    /// Rows of logits the fused head holds at once (its default chunk).
    pub chunk: u32,
    /// Bytes each path allocates beyond the inputs and the two gradients.
    pub fused_bytes: u64,
    pub unfused_bytes: u64,
    pub fused: Option<Timing>,
    pub unfused: Option<Timing>,
    /// The same with GSPO, whose sequence ratio needs every row's statistics before
    /// any gradient: the fused head makes each chunk's logits twice (once where one
    /// chunk holds every row).
    pub fused_gspo: Option<Timing>,
    pub unfused_gspo: Option<Timing>,
    /// `h·Wᵀ` into the whole logits, alone.
    pub logits_matmul: Option<Timing>,
    /// Why the times are missing, where they are.
    pub skipped: Option<String>,
}

impl HeadRow {
    /// GFLOP/s of the three products of forward + backward (6·T·H·V), fused.
    pub fn fused_gflops(&self) -> Option<f64> {
        let t = self.fused?;
        Some(3.0 * self.shape.matmul_flops() / (t.median_ms * 1e6))
    }

    /// GFLOP/s of the logits' matmul alone.
    pub fn matmul_gflops(&self) -> Option<f64> {
        let t = self.logits_matmul?;
        Some(self.shape.matmul_flops() / (t.median_ms * 1e6))
    }
}

/// The device buffers of one head shape.
struct HeadBuffers {
    hidden: wgpu::Buffer,
    lm_head: wgpu::Buffer,
    targets: wgpu::Buffer,
    mask: wgpu::Buffer,
    advantages: wgpu::Buffer,
    old: wgpu::Buffer,
    grad_hidden: wgpu::Buffer,
    grad_lm_head: wgpu::Buffer,
    out: LossBuffers,
}

impl HeadBuffers {
    fn new(ctx: &Context, s: HeadBenchShape) -> Result<Self> {
        let (t, h, v) = (s.rows as u64, s.hidden as u64, s.vocab as u64);
        // small values, varied enough that no row is constant
        let pattern = |n: u64| -> Vec<u8> {
            let vals = (0..n).map(|i| ((i * 2654435761 % 1000) as f32 / 1000.0 - 0.5) * 0.2);
            match s.dtype {
                DType::F32 => vals.flat_map(f32::to_le_bytes).collect(),
                DType::F16 => vals
                    .flat_map(|x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
                DType::Bf16 => vals
                    .flat_map(|x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            }
        };
        let f32s = |label, v: Vec<f32>| ctx.upload(label, bytemuck::cast_slice(&v));
        let storage = wgpu::BufferUsages::STORAGE;
        Ok(HeadBuffers {
            hidden: ctx.upload("hidden", &pattern(t * h)),
            lm_head: ctx.upload("lm_head", &pattern(v * h)),
            targets: ctx.upload(
                "targets",
                bytemuck::cast_slice(&(0..t).map(|i| (i * 7919 % v) as u32).collect::<Vec<_>>()),
            ),
            mask: f32s("mask", vec![1.0; t as usize]),
            advantages: f32s("advantages", (0..t).map(|i| (i % 3) as f32 - 1.0).collect()),
            old: f32s("old", vec![-(v as f32).ln(); t as usize]),
            grad_hidden: ctx.buffer("grad_hidden", t * h * 4, storage),
            grad_lm_head: ctx.buffer("grad_lm_head", v * h * 4, storage),
            out: LossBuffers::new(ctx, s.rows),
        })
    }

    fn inputs(&self, s: HeadBenchShape) -> (HeadInputs<'_>, HeadGradients<'_>) {
        let inputs = HeadInputs::new(
            MatrixView::new(&self.hidden, s.dtype, s.rows, s.hidden),
            MatrixView::new(&self.lm_head, s.dtype, s.vocab, s.hidden),
            TargetsView::new(&self.targets),
            F32View::new(&self.mask),
            Advantages::PerToken(F32View::new(&self.advantages)),
        )
        .with_old_logprobs(F32View::new(&self.old));
        let grads = HeadGradients {
            hidden: Some(MatrixView::new(
                &self.grad_hidden,
                DType::F32,
                s.rows,
                s.hidden,
            )),
            lm_head: Some(
                MatrixView::new(&self.grad_lm_head, DType::F32, s.vocab, s.hidden).into(),
            ),
        };
        (inputs, grads)
    }
}

/// The unfused path's logits (and their gradient, in place): `[T, V]` f32, in blocks
/// of rows that each fit one binding.
struct Unfused {
    logits: wgpu::Buffer,
    blocks: Vec<(u32, u32)>,
}

impl Unfused {
    fn new(ctx: &Context, s: HeadBenchShape) -> Result<Self> {
        let limits = ctx.device().limits();
        let bytes = s.rows as u64 * s.vocab as u64 * 4;
        if bytes > limits.max_buffer_size {
            return Err(Error::arg(
                "logits",
                format!("[T, V] f32 takes {bytes} bytes, more than this device's largest buffer"),
            ));
        }
        let row = s.vocab as u64 * 4;
        let per = (limits.max_storage_buffer_binding_size / row).clamp(1, s.rows as u64) as u32;
        let blocks = (0..s.rows)
            .step_by(per as usize)
            .map(|a| (a, (a + per).min(s.rows)))
            .collect();
        let usage = wgpu::BufferUsages::STORAGE;
        Ok(Unfused {
            logits: ctx.buffer("unfused logits", bytes, usage),
            blocks,
        })
    }
}

/// Times one head shape fused and unfused, side by side on the same inputs; with
/// `memory_only` (or where the device cannot hold them) the memory alone.
pub fn measure_head(
    ctx: &Context,
    s: HeadBenchShape,
    samples: usize,
    budget: Duration,
    memory_only: bool,
) -> Result<HeadRow> {
    let loss = PolicyLoss::new(ctx, LossConfig::default())?;
    let fused_bytes = loss.scratch_bytes_head_dense(
        (s.rows, s.rows),
        (s.vocab, s.hidden),
        s.dtype,
        Some(DType::F32),
        None,
    )?;
    let logits = s.rows as u64 * s.vocab as u64 * 4;
    let unfused_bytes =
        logits + loss.scratch_bytes_dense(s.rows, s.rows, s.vocab, DType::F32, None)?;
    let chunk = loss.head_chunk_dense(s.rows, s.vocab, s.hidden, s.dtype)?;
    let mut row = HeadRow {
        adapter: ctx.describe(),
        shape: s,
        chunk,
        fused_bytes,
        unfused_bytes,
        fused: None,
        unfused: None,
        fused_gspo: None,
        unfused_gspo: None,
        logits_matmul: None,
        skipped: memory_only.then(|| "memory only".to_string()),
    };
    if memory_only {
        return Ok(row);
    }
    let bufs = HeadBuffers::new(ctx, s)?;
    let (inputs, grads) = bufs.inputs(s);
    let out = bufs.out.outputs();
    let gspo = PolicyLoss::new(
        ctx,
        LossConfig {
            mode: crate::PolicyLossMode::Gspo,
            ..LossConfig::default()
        },
    )?;
    let unfused = Unfused::new(ctx, s);
    for (l, fused, unfused_t) in [
        (&loss, &mut row.fused, &mut row.unfused),
        (&gspo, &mut row.fused_gspo, &mut row.unfused_gspo),
    ] {
        *fused = Some(time(ctx, samples, budget, |e| {
            l.record_head(e, &inputs, &grads, &out)
        })?);
        if let Ok(u) = &unfused {
            let run = |e: &mut wgpu::CommandEncoder| record_unfused(ctx, l, e, &bufs, u, s);
            *unfused_t = Some(time(ctx, samples, budget, run)?);
        }
    }
    match &unfused {
        Ok(u) => {
            let fwd = |e: &mut wgpu::CommandEncoder| logits_matmuls(ctx, e, &bufs, u, s);
            row.logits_matmul = Some(time(ctx, samples, budget, fwd)?);
        }
        Err(e) => row.skipped = Some(format!("unfused: {e}")),
    }
    Ok(row)
}

fn operand<'a>(
    arg: &'static str,
    buffer: &'a wgpu::Buffer,
    dtype: DType,
    (offset, row, col): (u64, u64, u64),
) -> Operand<'a> {
    Operand {
        arg,
        buffer,
        dtype,
        offset,
        row,
        col,
    }
}

/// `x = h·Wᵀ` into the whole logits, a block of rows per binding.
fn logits_matmuls(
    ctx: &Context,
    e: &mut wgpu::CommandEncoder,
    b: &HeadBuffers,
    u: &Unfused,
    s: HeadBenchShape,
) -> Result<()> {
    let (h, v) = (s.hidden as u64, s.vocab as u64);
    for &(r0, r1) in &u.blocks {
        let p = Product {
            m: r1 - r0,
            n: s.vocab,
            k: s.hidden,
            a: operand("hidden", &b.hidden, s.dtype, (r0 as u64 * h, h, 1)),
            b: operand("lm_head", &b.lm_head, s.dtype, (0, 1, h)),
            c: &u.logits,
            c_offset: r0 as u64 * v,
            c_row: v,
            accumulate: false,
        };
        matmul::record(ctx, e, &p)?;
    }
    Ok(())
}

/// The unfused forward + backward: the whole logits, the loss with its gradient over
/// them in place, then ∂L/∂h and ∂L/∂W a block of rows at a time.
fn record_unfused(
    ctx: &Context,
    loss: &PolicyLoss,
    e: &mut wgpu::CommandEncoder,
    b: &HeadBuffers,
    u: &Unfused,
    s: HeadBenchShape,
) -> Result<()> {
    logits_matmuls(ctx, e, b, u, s)?;
    let inputs = LossInputs::new(
        LogitsView::new(&u.logits, DType::F32, s.rows, s.vocab),
        TargetsView::new(&b.targets),
        F32View::new(&b.mask),
        Advantages::PerToken(F32View::new(&b.advantages)),
    )
    .with_old_logprobs(F32View::new(&b.old));
    loss.record(e, &inputs, Gradient::InPlace, &b.out.outputs())?;
    let (h, v) = (s.hidden as u64, s.vocab as u64);
    for (i, &(r0, r1)) in u.blocks.iter().enumerate() {
        let gz = |row, col| operand("logits", &u.logits, DType::F32, (r0 as u64 * v, row, col));
        let dh = Product {
            m: r1 - r0,
            n: s.hidden,
            k: s.vocab,
            a: gz(v, 1),
            b: operand("lm_head", &b.lm_head, s.dtype, (0, h, 1)),
            c: &b.grad_hidden,
            c_offset: r0 as u64 * h,
            c_row: h,
            accumulate: false,
        };
        matmul::record(ctx, e, &dh)?;
        let dw = Product {
            m: s.vocab,
            n: s.hidden,
            k: r1 - r0,
            a: gz(1, v),
            b: operand("hidden", &b.hidden, s.dtype, (r0 as u64 * h, h, 1)),
            c: &b.grad_lm_head,
            c_offset: 0,
            c_row: h,
            accumulate: i > 0,
        };
        matmul::record(ctx, e, &dw)?;
    }
    Ok(())
}
