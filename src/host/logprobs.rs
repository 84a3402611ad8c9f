//! The log-prob primitive from host slices ([`Context::logprobs`]): checked on the
//! host, uploaded, recorded with [`LogProbs`], read back.

use super::{HostGrad, HostHead, HostHeadLoss, HostLogits, HostLoss};
use crate::context::Context;
use crate::error::{Error, Result, RowInput};
use crate::loss::{
    GradView, Gradient, LogProbConfig, LogProbInputs, LogProbs, LossBuffers, Metrics, Upstream,
};
use crate::reference::sampler::KeptSets;
use crate::view::{DType, F32View, LogitsView, TargetsView};

/// A batch for the log-prob primitive: logits `[rows, vocab]`, one target per row, and
/// the caller's upstream gradients (at least one of the three), one per row each.
#[derive(Clone, Copy, Debug)]
pub struct HostLogProbs<'a> {
    /// `rows × vocab`, row-major.
    pub logits: HostLogits<'a>,
    /// The vocabulary size `V`, the logits' row length.
    pub vocab: u32,
    /// Read where `upstream_logprobs` is not 0; anything elsewhere (padding included).
    pub targets: &'a [u32],
    /// The sampler's temperature of each row, in place of the configuration's one.
    pub temperatures: Option<&'a [f32]>,
    /// The sampler's given kept set of each row ([`crate::HostBatch::kept`]); a target
    /// is checked against it where `upstream_logprobs` is not 0.
    pub kept: Option<KeptSets<'a>>,
    /// `a = ∂L/∂logp`, one per row; `None` is 0 on every row. A row is read where any
    /// of `a`, `b`, `c` is not 0 (docs/MATH.md#the-log-prob-primitive).
    pub upstream_logprobs: Option<&'a [f32]>,
    /// `b = ∂L/∂H`, one per row; `None` is 0 on every row.
    pub upstream_entropy: Option<&'a [f32]>,
    /// `c = ∂L/∂lse`, one per row; `None` is 0 on every row.
    pub upstream_lse: Option<&'a [f32]>,
}

impl HostLogProbs<'_> {
    /// Checks this batch as [`Context::logprobs`] would, without a device: its shapes,
    /// `config`, then its values (the first bad row; a target only where
    /// `upstream_logprobs` is not 0).
    pub fn check(&self, config: &LogProbConfig) -> Result<()> {
        let rows = self.rows()?;
        self.check_rows(config, rows)
    }

    /// [`HostLogProbs::check`] of `rows` rows (of logits held elsewhere).
    fn check_rows(&self, config: &LogProbConfig, rows: usize) -> Result<()> {
        let cfg = crate::LossConfig {
            temperature: config.temperature,
            logit_softcap: config.logit_softcap,
            ..Default::default()
        };
        cfg.validate()?;
        self.row_inputs(rows)?;
        if self.temperatures.is_some() {
            crate::loss::check_temperatures(&cfg)?;
        }
        if let Some(k) = &self.kept {
            k.validate(rows, self.vocab as usize)?;
        }
        self.check_values()
    }

    /// The rows; every shape checked, each error naming its argument.
    fn rows(&self) -> Result<usize> {
        if self.vocab == 0 {
            return Err(Error::arg("vocab", "must be at least 1"));
        }
        let (n, v) = (self.logits.len(), self.vocab as usize);
        if !n.is_multiple_of(v) {
            let why = format!("length {n} is not a multiple of vocab {v}");
            return Err(Error::arg("logits", why));
        }
        let rows = n / v;
        u32::try_from(rows).map_err(|_| Error::arg("logits", "too many rows"))?;
        self.row_inputs(rows)?;
        Ok(rows)
    }

    /// The per-row inputs against `rows`, and at least one upstream vector.
    fn row_inputs(&self, rows: usize) -> Result<()> {
        let given = [
            ("upstream_logprobs", self.upstream_logprobs),
            ("upstream_entropy", self.upstream_entropy),
            ("upstream_lse", self.upstream_lse),
            ("temperatures", self.temperatures),
        ];
        let lens = given.iter().filter_map(|(a, x)| x.map(|x| (*a, x.len())));
        for (arg, len) in [("targets", self.targets.len())].into_iter().chain(lens) {
            if len != rows {
                let why = format!("has {len} values for {rows} logits rows");
                return Err(Error::arg(arg, why));
            }
        }
        if given[..3].iter().all(|(_, x)| x.is_none()) {
            return Err(Error::arg(
                "upstream",
                "give at least one of upstream_logprobs, upstream_entropy and upstream_lse",
            ));
        }
        Ok(())
    }

    /// The first bad row (docs/MATH.md#the-log-prob-primitive): a read row's upstream
    /// value that is NaN or ±inf, its bad temperature, or (where `a ≠ 0`) its target
    /// outside `[0, vocab)`.
    fn check_values(&self) -> Result<()> {
        let at = |x: Option<&[f32]>, r: usize| x.map_or(0.0, |x| x[r]);
        for r in 0..self.targets.len() {
            let up = [
                (RowInput::UpstreamLogprobs, at(self.upstream_logprobs, r)),
                (RowInput::UpstreamEntropy, at(self.upstream_entropy, r)),
                (RowInput::UpstreamLse, at(self.upstream_lse, r)),
            ];
            // NaN is not 0: a row with a NaN upstream value is read, and bad
            if up.iter().all(|(_, v)| *v == 0.0) {
                continue;
            }
            let tau = self.temperatures.map(|t| (RowInput::Temperatures, t[r]));
            for (tensor, value) in up.into_iter().chain(tau) {
                if tensor.is_bad(value) {
                    return Err(Error::InvalidInput {
                        tensor,
                        row: r,
                        value,
                    });
                }
            }
            let y = self.targets[r];
            if up[0].1 != 0.0 && y >= self.vocab {
                let id = y as i32 as i64;
                return Err(Error::TargetOutOfRange {
                    row: r,
                    id,
                    vocab: self.vocab,
                });
            }
            if up[0].1 != 0.0 && self.kept.is_some_and(|k| !k.keeps(r, y)) {
                return Err(Error::InvalidInput {
                    tensor: RowInput::Targets,
                    row: r,
                    value: y as f32,
                });
            }
        }
        Ok(())
    }
}

impl Context {
    /// The log-prob primitive of a host batch: each read row's `logp`, `H` and `lse`
    /// under the sampler's distribution, and, with `grad_dtype`, `∂L/∂logits` for the
    /// upstream gradients given (docs/MATH.md#the-log-prob-primitive). Bad input is an
    /// `Err` naming the tensor and the first bad row, before anything is uploaded.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn logprobs(
        &self,
        config: &LogProbConfig,
        batch: &HostLogProbs<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        pollster::block_on(self.logprobs_async(config, batch, grad_dtype))
    }

    /// [`Context::logprobs`] without blocking (the browser's form).
    pub async fn logprobs_async(
        &self,
        config: &LogProbConfig,
        batch: &HostLogProbs<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        batch.check(config)?;
        let prim = LogProbs::new(self, *config)?;
        let rows = batch.rows()?;
        self.run_logprobs(batch, rows, grad_dtype, |enc, inputs, gradient, out| {
            prim.record(enc, inputs, gradient, out)
        })
        .await
    }

    /// The primitive of shard `rank`'s columns of a split vocabulary ([`LogProbs::record_shard`]):
    /// `batch.logits` are its columns (`vocab` = `shards.width(rank)`), its targets and
    /// kept ids of the whole vocabulary, `gathered` every shard's partials in rank
    /// order ([`Context::shard_partials_with`] under the same temperature and softcap).
    /// `logprobs`, `entropy` and `lse` are the whole vocabulary's; the gradient is of
    /// this shard's columns.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn logprobs_shard(
        &self,
        config: &LogProbConfig,
        (shards, rank): (&crate::VocabShards, usize),
        batch: &HostLogProbs<'_>,
        gathered: &[f32],
        grad_dtype: Option<DType>,
    ) -> Result<HostLoss> {
        shards.check_rank(rank)?;
        if batch.vocab != shards.width(rank) {
            let why = format!(
                "is {}, but shard {rank} holds {}",
                batch.vocab,
                shards.width(rank)
            );
            return Err(Error::arg("vocab", why));
        }
        let rows = batch.rows()?;
        // targets and kept ids are of the whole vocabulary
        let whole = HostLogProbs {
            vocab: shards.vocab(),
            ..*batch
        };
        whole.check_rows(config, rows)?;
        let prim = LogProbs::new(self, *config)?;
        let expect = shards.len() * rows * crate::PARTIAL_FLOATS as usize;
        if gathered.len() != expect {
            let why = format!(
                "has {} values; {} shards × {rows} rows × 4 are {expect}",
                gathered.len(),
                shards.len()
            );
            return Err(Error::arg("gathered", why));
        }
        self.fits_buffer(
            "gathered",
            "every shard's partials",
            (gathered.len() as u64 * 4).max(4),
        )?;
        let g = self.upload("gathered", bytemuck::cast_slice(gathered));
        let run = self.run_logprobs(batch, rows, grad_dtype, |enc, inputs, gradient, out| {
            let p = F32View::new(&g);
            prim.record_shard(enc, shards, rank, inputs, gradient, p, out)
        });
        pollster::block_on(run)
    }

    /// Uploads a checked batch of `rows` rows, records the primitive with `record`,
    /// and reads every output back (the metrics checked).
    async fn run_logprobs(
        &self,
        batch: &HostLogProbs<'_>,
        rows: usize,
        grad_dtype: Option<DType>,
        record: impl FnOnce(
            &mut wgpu::CommandEncoder,
            &LogProbInputs<'_>,
            Gradient<'_>,
            &crate::LossOutputs<'_>,
        ) -> Result<()>,
    ) -> Result<HostLoss> {
        let (vocab, dtype) = (batch.vocab, batch.logits.dtype());
        let elems = rows as u64 * vocab as u64;
        let what = format!("the logits [{rows}, {vocab}] {dtype}");
        self.fits_buffer("logits", &what, elems * dtype.size())?;
        let grad_bytes = elems * grad_dtype.map_or(0, DType::size);
        let what = format!("the gradient [{rows}, {vocab}]");
        self.fits_buffer("gradient", &what, grad_bytes)?;
        let up = ProbUpload::new(self, batch);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let g =
            grad_dtype.map(|_| self.buffer("gradient", grad_bytes.div_ceil(4).max(1) * 4, usage));
        let gradient = match (&g, grad_dtype) {
            (Some(g), Some(d)) => Gradient::Into(GradView::new(g, d, vocab)),
            _ => Gradient::None,
        };
        let out = LossBuffers::new(self, rows as u32);
        let mut encoder = self.device().create_command_encoder(&Default::default());
        record(
            &mut encoder,
            &up.inputs(dtype, (rows as u32, vocab)),
            gradient,
            &out.outputs(),
        )?;
        let n = rows as u64 * 4;
        let mut list = vec![
            (&out.metrics, Metrics::LEN as u64 * 4),
            (&out.logprobs, n),
            (&out.entropy, n),
            (&out.lse, n),
        ];
        list.extend(g.as_ref().map(|g| (g, grad_bytes)));
        let groups: Vec<&[(&wgpu::Buffer, u64)]> = list.iter().map(std::slice::from_ref).collect();
        let got = self.read_back_groups(encoder, &groups).await?;
        let metrics = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
        LogProbs::check(&metrics, vocab)?;
        Ok(HostLoss {
            metrics,
            logprobs: bytemuck::pod_collect_to_vec(&got[1]),
            entropy: bytemuck::pod_collect_to_vec(&got[2]),
            lse: bytemuck::pod_collect_to_vec(&got[3]),
            grad: grad_dtype.map(|dtype| HostGrad {
                dtype,
                bytes: got.get(4).cloned().unwrap_or_default(),
            }),
        })
    }
}

/// A primitive's host batch on the device.
struct ProbUpload {
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    up: [Option<wgpu::Buffer>; 3],
    temps: Option<wgpu::Buffer>,
    kept: Option<super::UploadedKept>,
}

impl ProbUpload {
    fn new(ctx: &Context, b: &HostLogProbs<'_>) -> Self {
        let f32s = |label, v: Option<&[f32]>| v.map(|v| ctx.upload(label, bytemuck::cast_slice(v)));
        ProbUpload {
            x: ctx.upload("logits", b.logits.bytes()),
            y: ctx.upload("targets", bytemuck::cast_slice(b.targets)),
            up: [
                f32s("upstream_logprobs", b.upstream_logprobs),
                f32s("upstream_entropy", b.upstream_entropy),
                f32s("upstream_lse", b.upstream_lse),
            ],
            temps: f32s("temperatures", b.temperatures),
            kept: b.kept.map(|k| super::UploadedKept::new(ctx, &k)),
        }
    }

    fn inputs(&self, dtype: DType, (rows, vocab): (u32, u32)) -> LogProbInputs<'_> {
        fn view(b: &Option<wgpu::Buffer>) -> Option<F32View<'_>> {
            b.as_ref().map(F32View::new)
        }
        LogProbInputs {
            logits: LogitsView::new(&self.x, dtype, rows, vocab),
            targets: TargetsView::new(&self.y),
            temperatures: view(&self.temps),
            kept: self.kept.as_ref().map(super::UploadedKept::view),
            upstream: Upstream {
                logprobs: view(&self.up[0]),
                entropy: view(&self.up[1]),
                lse: view(&self.up[2]),
            },
        }
    }
}

/// The log-prob primitive's batch from hidden states `[rows, H]` and the lm-head weight
/// `[V, H]` ([`HostHead`]'s), the logits never held whole.
#[derive(Clone, Copy, Debug)]
pub struct HostLogProbsHead<'a> {
    /// The hidden states `h`, `rows × hidden_dim`, row-major.
    pub hidden: HostLogits<'a>,
    /// The lm-head weight `W`, `V × hidden_dim`, row-major, in hidden's dtype.
    pub lm_head: HostLogits<'a>,
    /// The hidden width `H`; at least 1.
    pub hidden_dim: u32,
    /// Each row's target, a row of W ([`HostLogProbs::targets`]).
    pub targets: &'a [u32],
    /// The sampler's temperature of each row ([`HostLogProbs::temperatures`]).
    pub temperatures: Option<&'a [f32]>,
    /// The sampler's given kept set of each row: ids of W's rows.
    pub kept: Option<KeptSets<'a>>,
    /// `a = ∂L/∂logp` per row ([`HostLogProbs::upstream_logprobs`]).
    pub upstream_logprobs: Option<&'a [f32]>,
    /// `b = ∂L/∂H` per row.
    pub upstream_entropy: Option<&'a [f32]>,
    /// `c = ∂L/∂lse` per row.
    pub upstream_lse: Option<&'a [f32]>,
    /// Rows of logits held at once ([`crate::HeadInputs::chunk_rows`]).
    pub chunk_rows: Option<u32>,
}

impl Context {
    /// [`Context::logprobs`] from hidden states and the lm-head weight: with
    /// `grad_dtype`, `∂L/∂h` and `∂L/∂W` of the caller's loss in that dtype.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn logprobs_head(
        &self,
        config: &LogProbConfig,
        batch: &HostLogProbsHead<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        pollster::block_on(self.logprobs_head_async(config, batch, grad_dtype))
    }

    /// [`Context::logprobs_head`] without blocking (the browser's form).
    pub async fn logprobs_head_async(
        &self,
        config: &LogProbConfig,
        b: &HostLogProbsHead<'_>,
        grad_dtype: Option<DType>,
    ) -> Result<HostHeadLoss> {
        let h = b.hidden_dim.max(1) as usize;
        let vocab = u32::try_from(b.lm_head.len() / h)
            .map_err(|_| Error::arg("lm_head", "too many rows"))?;
        // the rows' checks are those of logits [rows, V]: the hidden rows stand in for
        // them (the shapes are the head's to check)
        let rows = b.hidden.len() / h;
        let stand_in = HostLogProbs {
            logits: HostLogits::F32(&[]),
            vocab: vocab.max(1),
            targets: b.targets,
            temperatures: b.temperatures,
            kept: b.kept,
            upstream_logprobs: b.upstream_logprobs,
            upstream_entropy: b.upstream_entropy,
            upstream_lse: b.upstream_lse,
        };
        stand_in.check_rows(config, rows)?;
        let prim = LogProbs::new(self, *config)?;
        // the loss's head call on the primitive's rows: a (or zeros) as the advantages,
        // b and c as old and ref, the rows read as the mask (prepare computes them too)
        let zeros = vec![0.0f32; b.targets.len()];
        let a = b.upstream_logprobs.unwrap_or(&zeros);
        let at = |x: Option<&[f32]>, r: usize| x.map_or(0.0, |x| x[r]);
        let read: Vec<f32> = (0..b.targets.len())
            .map(|r| {
                let up = [a[r], at(b.upstream_entropy, r), at(b.upstream_lse, r)];
                f32::from(u8::from(up.iter().any(|&v| v != 0.0)))
            })
            .collect();
        let head = HostHead {
            kept: b.kept,
            hidden: b.hidden,
            lm_head: b.lm_head,
            hidden_dim: b.hidden_dim,
            rows_per_seq: None,
            targets: b.targets,
            mask: &read,
            advantages: a,
            old_logprobs: b.upstream_entropy,
            ref_logprobs: b.upstream_lse,
            rollout_logprobs: None,
            temperatures: b.temperatures,
            chunk_rows: b.chunk_rows,
        };
        self.head_with_async(&prim.loss, &head, grad_dtype).await
    }
}
