//! The fused linear head on host slices: upload, record, read back.

use super::{HostGrad, HostLogits, HostLoss, HostPart};
use crate::config::LossConfig;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::loss::{
    Advantages, HeadGradients, HeadInputs, LossBuffers, MatrixView, Metrics, PolicyLoss,
    VocabBlocks,
};
use crate::reference::sampler::KeptSets;
use crate::view::{DType, F32View, TargetsView};
use crate::HostBatch;

/// One batch on the host for [`Context::policy_loss_head`]: hidden states and the
/// lm-head weight instead of logits.
#[derive(Clone, Copy, Debug)]
pub struct HostHead<'a> {
    /// The last hidden states `h`, `rows × hidden_dim`, row-major
    /// (docs/MATH.md#the-fused-linear-head).
    pub hidden: HostLogits<'a>,
    /// `V × hidden_dim`, row-major, in hidden's dtype (`nn.Linear(H, V).weight`); its
    /// row count is the vocabulary size `V`.
    pub lm_head: HostLogits<'a>,
    /// The hidden width `H`, the row length of both matrices; at least 1.
    pub hidden_dim: u32,
    /// Rows per sequence (S); `None` for one sequence of all rows.
    pub rows_per_seq: Option<u32>,
    /// The sampled token id of each row ([`HostBatch::targets`]): a row of W.
    pub targets: &'a [u32],
    /// The response mask of each row ([`HostBatch::mask`]).
    pub mask: &'a [f32],
    /// One per sequence, or one per row.
    pub advantages: &'a [f32],
    /// The behaviour policy's log-prob of each row ([`HostBatch::old_logprobs`]).
    pub old_logprobs: Option<&'a [f32]>,
    /// The reference policy's log-prob of each row ([`HostBatch::ref_logprobs`]).
    pub ref_logprobs: Option<&'a [f32]>,
    /// The sampler's log-prob of each row ([`HostPart::rollout_logprobs`]).
    pub rollout_logprobs: Option<&'a [f32]>,
    /// The sampler's temperature of each row ([`HostBatch::temperatures`]).
    pub temperatures: Option<&'a [f32]>,
    /// The sampler's given kept set of each row ([`HostBatch::kept`]): ids of W's rows.
    pub kept: Option<KeptSets<'a>>,
    /// Rows of logits held at once ([`HeadInputs::chunk_rows`]).
    pub chunk_rows: Option<u32>,
}

/// Everything [`Context::policy_loss_head`] computes, read back: the loss's outputs
/// (no gradient of logits: there are none) and the head's gradients.
#[derive(Clone, Debug, PartialEq)]
pub struct HostHeadLoss {
    /// The loss, metrics and per-row outputs, as for logits; its `grad` is `None`.
    pub loss: HostLoss,
    /// ∂Loss/∂h, `rows × H`, in the asked dtype (0 on rows of weight 0).
    pub grad_hidden: Option<HostGrad>,
    /// ∂Loss/∂W, `V × H`, in the asked dtype.
    pub grad_lm_head: Option<HostGrad>,
}

impl HostHead<'_> {
    /// The shape checks of a host batch, and its per-row values ([`HostPart::check`]).
    /// `primitive`: the log-prob primitive's rows, whose target is read where its
    /// upstream `a` (here the advantages) is not 0, not where it is read at all.
    fn check(&self, config: &LossConfig, primitive: bool) -> Result<(u32, u32, u32, bool)> {
        let h = self.hidden_dim;
        if h == 0 {
            return Err(Error::arg("hidden_dim", "must be at least 1"));
        }
        if self.lm_head.dtype() != self.hidden.dtype() {
            return Err(Error::arg("lm_head", "needs hidden's dtype"));
        }
        for (arg, len) in [
            ("hidden", self.hidden.len()),
            ("lm_head", self.lm_head.len()),
        ] {
            if !len.is_multiple_of(h as usize) {
                return Err(Error::arg(
                    arg,
                    format!("length {len} is not a multiple of H = {h}"),
                ));
            }
        }
        let vocab = u32::try_from(self.lm_head.len() / h as usize)
            .map_err(|_| Error::arg("lm_head", "too many rows"))?;
        let part = HostPart {
            batch: HostBatch {
                kept: None,
                logits: self.hidden,
                vocab: h,
                rows_per_seq: self.rows_per_seq,
                targets: self.targets,
                mask: self.mask,
                advantages: self.advantages,
                old_logprobs: self.old_logprobs,
                ref_logprobs: self.ref_logprobs,
                temperatures: self.temperatures,
            },
            rollout_logprobs: self.rollout_logprobs,
        };
        let shape = part.check_at(config, 0).map_err(|e| match e {
            Error::InvalidArgument {
                arg: "logits",
                reason,
            } => Error::InvalidArgument {
                arg: "hidden",
                reason: reason.replace("logits rows", "hidden rows"),
            },
            other => other,
        })?;
        if let Some(k) = &self.kept {
            // the kept ids are W's rows, not hidden's columns
            crate::loss::check_kept(config)?;
            k.validate(shape.rows as usize, vocab as usize)?;
            let reads = if primitive {
                self.advantages
            } else {
                self.mask
            };
            let rows = (self.targets, reads);
            super::check::check_kept_targets(k, rows, vocab, 0..self.targets.len(), 0)?;
        }
        Ok((shape.rows, shape.rows_per_seq, vocab, shape.per_token))
    }
}

/// A head batch on the device: its inputs, W in vocabulary blocks (buffer, rows).
struct HeadUpload {
    hidden: wgpu::Buffer,
    lm_head: Vec<(wgpu::Buffer, u32)>,
    targets: wgpu::Buffer,
    mask: wgpu::Buffer,
    advantages: wgpu::Buffer,
    old: Option<wgpu::Buffer>,
    refp: Option<wgpu::Buffer>,
    rollout: Option<wgpu::Buffer>,
    temps: Option<wgpu::Buffer>,
    /// The kept sets' offsets and ids, and how many ids.
    kept: Option<super::UploadedKept>,
}

/// The gradients' buffers: ∂L/∂h (buffer, bytes) and ∂L/∂W in vocabulary blocks
/// (buffer, rows, bytes).
struct HeadGradBuffers {
    dtype: DType,
    hidden: (wgpu::Buffer, u64),
    lm_head: Vec<(wgpu::Buffer, u32, u64)>,
}

/// The rows of each block a `[V, H]` matrix of `elem`-byte values is held in: one
/// block where the device's largest buffer holds it, else as few as hold it, shared
/// evenly in whole matmul tiles of rows.
fn block_rows(
    ctx: &Context,
    arg: &'static str,
    (vocab, h): (u32, u32),
    elem: u64,
) -> Result<Vec<u32>> {
    const TILE: u64 = 128;
    // a buffer's size is rounded up to 4 bytes: rows fill at most the largest multiple
    let largest = ctx.device().limits().max_buffer_size / 4 * 4;
    let row = h as u64 * elem;
    let per = largest / row.max(1);
    if per == 0 {
        return Err(Error::arg(
            arg,
            format!("one row of H = {h} values spans {row} bytes, more than this device's largest buffer ({largest} bytes)"),
        ));
    }
    if per >= vocab as u64 {
        return Ok(vec![vocab]);
    }
    let per = if per >= TILE { per / TILE * TILE } else { per };
    let k = (vocab as u64).div_ceil(per);
    let each = (vocab as u64).div_ceil(k).div_ceil(TILE) * TILE;
    let each = each.min(per) as u32;
    let mut out = Vec::new();
    let mut left = vocab;
    while left > 0 {
        out.push(each.min(left));
        left -= each.min(left);
    }
    Ok(out)
}

impl Context {
    /// Every buffer of a head call checked against the device's largest before any
    /// is made: the rows of W's blocks, and of ∂L/∂W's where there is one.
    fn head_blocks(
        &self,
        b: &HostHead<'_>,
        (rows, vocab): (u32, u32),
        grad_dtype: Option<DType>,
    ) -> Result<(Vec<u32>, Option<Vec<u32>>)> {
        let h = b.hidden_dim;
        let padded = |n: u64| n.div_ceil(4).max(1) * 4;
        let dtypes = [("hidden", b.hidden.dtype())].into_iter();
        for (arg, d) in dtypes.chain(grad_dtype.map(|d| ("grad_hidden", d))) {
            let bytes = padded(rows as u64 * h as u64 * d.size());
            self.fits_buffer(arg, &format!("[{rows}, {h}] {d}"), bytes)?;
        }
        super::check_rows(self, rows)?;
        let w = block_rows(self, "lm_head", (vocab, h), b.hidden.dtype().size())?;
        let g = grad_dtype
            .map(|d| block_rows(self, "grad_lm_head", (vocab, h), d.size()))
            .transpose()?;
        Ok((w, g))
    }

    /// Uploads a checked head batch, W in blocks of `w_rows` rows.
    fn upload_head(&self, b: &HostHead<'_>, w_rows: &[u32]) -> HeadUpload {
        let row = b.hidden_dim as usize * b.hidden.dtype().size() as usize;
        let f32s = |label, v: &[f32]| self.upload(label, bytemuck::cast_slice(v));
        let w = b.lm_head.bytes();
        let mut at = 0usize;
        let lm_head = w_rows
            .iter()
            .map(|&n| {
                let len = n as usize * row;
                at += len;
                (self.upload("lm_head", &w[at - len..at]), n)
            })
            .collect();
        HeadUpload {
            hidden: self.upload("hidden", b.hidden.bytes()),
            lm_head,
            targets: self.upload("targets", bytemuck::cast_slice(b.targets)),
            mask: f32s("mask", b.mask),
            advantages: f32s("advantages", b.advantages),
            old: b.old_logprobs.map(|v| f32s("old_logprobs", v)),
            refp: b.ref_logprobs.map(|v| f32s("ref_logprobs", v)),
            rollout: b.rollout_logprobs.map(|v| f32s("rollout_logprobs", v)),
            temps: b.temperatures.map(|v| f32s("temperatures", v)),
            kept: b.kept.map(|k| super::UploadedKept::new(self, &k)),
        }
    }

    /// The gradients' buffers in `dtype`: ∂L/∂W in blocks of `g_rows` rows.
    fn head_grad_buffers(
        &self,
        dtype: DType,
        (rows, h): (u32, u32),
        g_rows: &[u32],
    ) -> HeadGradBuffers {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let padded = |n: u64| n.div_ceil(4).max(1) * 4;
        let gh_bytes = rows as u64 * h as u64 * dtype.size();
        let lm_head = g_rows
            .iter()
            .map(|&n| {
                let bytes = n as u64 * h as u64 * dtype.size();
                (self.buffer("grad_lm_head", padded(bytes), usage), n, bytes)
            })
            .collect();
        HeadGradBuffers {
            dtype,
            hidden: (
                self.buffer("grad_hidden", padded(gh_bytes), usage),
                gh_bytes,
            ),
            lm_head,
        }
    }

    /// Submits a head call and reads back its outputs and gradients.
    async fn read_head(
        &self,
        encoder: wgpu::CommandEncoder,
        out: &LossBuffers,
        (rows, vocab): (u32, u32),
        grads: Option<&HeadGradBuffers>,
    ) -> Result<HostHeadLoss> {
        let one = |b, n| vec![(b, n)];
        let mut groups = vec![
            one(&out.metrics, Metrics::LEN as u64 * 4),
            one(&out.logprobs, rows as u64 * 4),
            one(&out.entropy, rows as u64 * 4),
            one(&out.lse, rows as u64 * 4),
        ];
        if let Some(g) = grads {
            groups.push(one(&g.hidden.0, g.hidden.1));
            groups.push(g.lm_head.iter().map(|(b, _, n)| (b, *n)).collect());
        }
        let lists: Vec<&[(&wgpu::Buffer, u64)]> = groups.iter().map(|g| &g[..]).collect();
        let mut got = self.read_back_groups(encoder, &lists).await?;
        let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
        metrics.check(vocab)?;
        let mut grad = |i: usize| {
            grads.map(|g| HostGrad {
                dtype: g.dtype,
                bytes: std::mem::take(&mut got[i]),
            })
        };
        let (grad_hidden, grad_lm_head) = (grad(4), grad(5));
        Ok(HostHeadLoss {
            loss: HostLoss {
                metrics,
                logprobs: bytemuck::pod_collect_to_vec(&got[1]),
                entropy: bytemuck::pod_collect_to_vec(&got[2]),
                lse: bytemuck::pod_collect_to_vec(&got[3]),
                grad: None,
            },
            grad_hidden,
            grad_lm_head,
        })
    }

    /// The policy loss of a host batch of hidden states and an lm-head weight: uploads
    /// it, runs [`PolicyLoss::record_head`] (with `grad_dtype`, both gradients in that
    /// dtype) and reads everything back. W and ∂L/∂W larger than one buffer of the
    /// device are held in vocabulary blocks ([`crate::VocabBlocks`]) and come back
    /// whole; a buffer nothing can cut (hidden's, say) larger than the device's largest
    /// is an `Err` naming it and the sizes, before anything is uploaded.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn policy_loss_head(
        &self,
        config: &LossConfig,
        batch: &HostHead<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        pollster::block_on(self.policy_loss_head_async(config, batch, grad_dtype))
    }

    /// [`Context::policy_loss_head`] without blocking (the browser's form).
    pub async fn policy_loss_head_async(
        &self,
        config: &LossConfig,
        b: &HostHead<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        let loss = PolicyLoss::new(self, *config)?;
        self.head_with_async(&loss, b, grad_dtype).await
    }

    /// [`Context::policy_loss_head_async`] with `loss` (the log-prob primitive's, say).
    pub(super) async fn head_with_async(
        &self,
        loss: &PolicyLoss,
        b: &HostHead<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        let config = loss.config();
        let (rows, rps, vocab, per_token) = b.check(config, loss.primitive)?;
        let h = b.hidden_dim;
        let dtype = b.hidden.dtype();
        // the plan's own checks (a row of logits against a binding, say) before any
        // upload
        loss.scratch_bytes_head_dense((rows, rps), (vocab, h), dtype, grad_dtype, b.chunk_rows)?;
        let (w_rows, g_rows) = self.head_blocks(b, (rows, vocab), grad_dtype)?;
        let up = self.upload_head(b, &w_rows);
        let g = grad_dtype
            .zip(g_rows)
            .map(|(d, g_rows)| self.head_grad_buffers(d, (rows, h), &g_rows));
        let hv =
            MatrixView::new(&up.hidden, dtype, rows, h).with_sequences(rps, rps as u64 * h as u64);
        let w: Vec<MatrixView<'_>> = up
            .lm_head
            .iter()
            .map(|(buf, n)| MatrixView::new(buf, dtype, *n, h))
            .collect();
        let mut inputs = HeadInputs::new(
            hv,
            VocabBlocks::Blocks(&w),
            TargetsView::new(&up.targets),
            F32View::new(&up.mask),
            match per_token {
                true => Advantages::PerToken(F32View::new(&up.advantages)),
                false => Advantages::PerSequence(F32View::new(&up.advantages)),
            },
        );
        inputs.old_logprobs = up.old.as_ref().map(F32View::new);
        inputs.ref_logprobs = up.refp.as_ref().map(F32View::new);
        inputs.rollout_logprobs = up.rollout.as_ref().map(F32View::new);
        inputs.temperatures = up.temps.as_ref().map(F32View::new);
        inputs.kept = up.kept.as_ref().map(super::UploadedKept::view);
        inputs.chunk_rows = b.chunk_rows;
        let gw: Vec<MatrixView<'_>> = g
            .iter()
            .flat_map(|g| {
                g.lm_head
                    .iter()
                    .map(|(buf, n, _)| MatrixView::new(buf, g.dtype, *n, h))
            })
            .collect();
        let grads = HeadGradients {
            hidden: g
                .as_ref()
                .map(|g| MatrixView::new(&g.hidden.0, g.dtype, rows, h)),
            lm_head: g.as_ref().map(|_| VocabBlocks::Blocks(&gw)),
        };
        let out = LossBuffers::new(self, rows);
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        loss.record_head(&mut encoder, &inputs, &grads, &out.outputs())?;
        self.read_head(encoder, &out, (rows, vocab), g.as_ref())
            .await
    }
}
