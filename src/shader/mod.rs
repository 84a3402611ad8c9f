//! Which pipelines exist and how each is built: the kernels, the key that selects a
//! distinct pipeline, the WGSL snippets its module is joined from (the Rust↔WGSL
//! contract, `abi`, first), and the override constants it is specialised with. Knows
//! no device: `context.rs` caches what `build_pipeline` builds, `kernels/` records.

// before the modules that use it
/// A file of `shaders/`, by its path there, with its text.
macro_rules! shader {
    ($path:literal) => {
        $crate::shader::Snippet {
            path: $path,
            source: include_str!(concat!("../../shaders/", $path)),
        }
    };
}

pub(crate) mod abi;
mod sampler;
mod snippets;
pub(crate) mod variants;

pub use sampler::SamplerMap;

pub use snippets::Snippet;

use crate::view::DType;

/// Which optional hardware paths the kernels use. Both default to "when the adapter
/// has it"; turning them off forces the portable fallback, which gives the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Paths {
    /// Read f16 logits natively (`SHADER_F16`) instead of unpacking them from u32.
    pub shader_f16: bool,
    /// Finish workgroup reductions with subgroup shuffles (`SUBGROUP`) instead of shared memory.
    pub subgroups: bool,
}

impl Paths {
    /// The portable path every adapter runs: no f16 arithmetic, no subgroups.
    pub const FALLBACK: Paths = Paths {
        shader_f16: false,
        subgroups: false,
    };

    /// Short name for tables and test messages.
    pub fn describe(self) -> &'static str {
        match (self.shader_f16, self.subgroups) {
            (false, false) => "fallback",
            (true, false) => "f16",
            (false, true) => "subgroups",
            (true, true) => "f16+subgroups",
        }
    }
}

/// Workgroup size of the row kernels on GPUs (and of the one-workgroup kernels): one
/// workgroup reduces one row.
pub(crate) const ROW_WORKGROUP: u32 = 256;

/// Workgroup size of the row kernels with lane blocks (CPU adapters). A CPU rasteriser
/// runs a workgroup's lanes as SIMD batches one after the other, each through every
/// instruction of the kernel under a mask, so a row's fixed cost grows with its lanes;
/// 64 lanes still split a row eight ways per batch. (lavapipe, 16384 × 10 f32: the loss
/// 1.8× faster than with 256 lanes; BENCHMARKS.md.)
pub(crate) const CPU_ROW_WORKGROUP: u32 = 64;

/// The row kernels' workgroup size for a lane layout.
pub(crate) fn row_workgroup(lane_blocks: bool) -> u32 {
    if lane_blocks {
        CPU_ROW_WORKGROUP
    } else {
        ROW_WORKGROUP
    }
}

/// The kernels of the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Per row: log-sum-exp, target log-prob, entropy.
    RowStats,
    /// Per row: one shard's (or column block's) partial statistics.
    RowPartials,
    /// The same over a given kept set, with the kept (id, logit) pairs the loss
    /// launch scatters its gradient from.
    KeptPartials,
    /// Per row: the threshold of a kept set computed by top-k, top-p and min-p.
    KeptSelect,
    /// The partials of every shard merged into row statistics.
    Combine,
    /// Per row inputs gathered, per sequence aggregation weights.
    Prepare,
    /// The fused forward + backward row kernel.
    PolicyLoss,
    /// What each sequence's tokens share: sequence ratios, GMPO's and VESPO's sums, the
    /// off-policy mask, the gradient through a sequence mean.
    SeqTerms,
    /// Loss and metrics.
    Reduce,
    /// The batch-wide token choices: rollout weights, entropy mask, covariance selection.
    Select,
    /// Advantages from rewards.
    Advantages,
    /// The unfused baseline of the benchmarks, one op per kernel.
    Baseline(BaselineOp),
    /// The roofline's copy kernel.
    Copy,
    /// The fused linear head's tiled matrix product, of A and B in these dtypes, with
    /// A's k (else its m) and B's n (else its k) contiguous.
    Matmul {
        /// A's dtype.
        a: DType,
        /// B's dtype.
        b: DType,
        /// Whether A's k index is the contiguous one (else its m).
        a_k_contig: bool,
        /// Whether B's n index is the contiguous one (else its k).
        b_n_contig: bool,
    },
    /// The fused linear head's row moves between a strided tensor of this dtype and
    /// a dense f32 matrix: gathered (hidden rows in) or scattered (gradients out).
    HeadRows {
        /// The strided tensor's dtype.
        dtype: DType,
        /// Scatter (f32 rows out to the tensor) rather than gather.
        scatter: bool,
    },
}

/// The ops of the unfused baseline (`shaders/baseline.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BaselineOp {
    LogSoftmax,
    Gather,
    MaskedMean,
    ScatterGrad,
    LogSoftmaxBwd,
}

/// Where the policy-loss kernel writes the gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GradOut {
    /// No gradient: the forward alone.
    None,
    /// A separate buffer of this dtype.
    Separate(DType),
    /// Over the logits.
    InPlace,
}

/// Every matmul: A (hidden or the logits' gradient) and B (the head's weight, or the
/// hidden states) in any pair of dtypes.
const MATMULS: [Kernel; 36] = {
    let d = DType::ALL;
    let mut out = [Kernel::Copy; 36];
    let mut i = 0;
    while i < 36 {
        out[i] = Kernel::Matmul {
            a: d[i / 12],
            b: d[i / 4 % 3],
            a_k_contig: i & 2 != 0,
            b_n_contig: i & 1 != 0,
        };
        i += 1;
    }
    out
};

impl Kernel {
    /// Every kernel, each matmul's dtype and layout variant included.
    pub const ALL: [Kernel; 59] = [
        Kernel::RowStats,
        Kernel::RowPartials,
        Kernel::KeptPartials,
        Kernel::KeptSelect,
        Kernel::Combine,
        Kernel::Prepare,
        Kernel::PolicyLoss,
        Kernel::SeqTerms,
        Kernel::Reduce,
        Kernel::Select,
        Kernel::Advantages,
        Kernel::Baseline(BaselineOp::LogSoftmax),
        Kernel::Baseline(BaselineOp::Gather),
        Kernel::Baseline(BaselineOp::MaskedMean),
        Kernel::Baseline(BaselineOp::ScatterGrad),
        Kernel::Baseline(BaselineOp::LogSoftmaxBwd),
        Kernel::Copy,
        MATMULS[0],
        MATMULS[1],
        MATMULS[2],
        MATMULS[3],
        MATMULS[4],
        MATMULS[5],
        MATMULS[6],
        MATMULS[7],
        MATMULS[8],
        MATMULS[9],
        MATMULS[10],
        MATMULS[11],
        MATMULS[12],
        MATMULS[13],
        MATMULS[14],
        MATMULS[15],
        MATMULS[16],
        MATMULS[17],
        MATMULS[18],
        MATMULS[19],
        MATMULS[20],
        MATMULS[21],
        MATMULS[22],
        MATMULS[23],
        MATMULS[24],
        MATMULS[25],
        MATMULS[26],
        MATMULS[27],
        MATMULS[28],
        MATMULS[29],
        MATMULS[30],
        MATMULS[31],
        MATMULS[32],
        MATMULS[33],
        MATMULS[34],
        MATMULS[35],
        Kernel::HeadRows {
            dtype: DType::F32,
            scatter: false,
        },
        Kernel::HeadRows {
            dtype: DType::F16,
            scatter: false,
        },
        Kernel::HeadRows {
            dtype: DType::Bf16,
            scatter: false,
        },
        Kernel::HeadRows {
            dtype: DType::F32,
            scatter: true,
        },
        Kernel::HeadRows {
            dtype: DType::F16,
            scatter: true,
        },
        Kernel::HeadRows {
            dtype: DType::Bf16,
            scatter: true,
        },
    ];

    /// Its own file, the module's last snippet.
    fn snippet(self) -> Snippet {
        match self {
            Kernel::RowStats => shader!("row_stats.wgsl"),
            Kernel::RowPartials => shader!("row_partials.wgsl"),
            Kernel::KeptPartials => shader!("kept_partials.wgsl"),
            Kernel::KeptSelect => shader!("kept_select.wgsl"),
            Kernel::Combine => shader!("combine.wgsl"),
            Kernel::Prepare => shader!("prepare.wgsl"),
            Kernel::PolicyLoss => shader!("policy_loss.wgsl"),
            Kernel::SeqTerms => shader!("seq_terms.wgsl"),
            Kernel::Reduce => shader!("reduce.wgsl"),
            Kernel::Select => shader!("select.wgsl"),
            Kernel::Advantages => shader!("advantages.wgsl"),
            Kernel::Baseline(_) => shader!("baseline.wgsl"),
            Kernel::Copy => shader!("copy.wgsl"),
            Kernel::Matmul { .. } => shader!("matmul.wgsl"),
            Kernel::HeadRows { .. } => shader!("head_rows.wgsl"),
        }
    }

    /// The Rust↔WGSL declarations its module opens with (`abi`).
    pub(crate) fn abi(self) -> abi::Abi {
        use abi::*;
        match self {
            Kernel::RowStats => row_stats::ABI,
            Kernel::RowPartials => row_partials::ABI,
            Kernel::KeptPartials => kept_partials::ABI,
            Kernel::KeptSelect => kept_select::ABI,
            Kernel::Combine => combine::ABI,
            Kernel::Prepare => prepare::ABI,
            Kernel::PolicyLoss => policy_loss::ABI,
            Kernel::SeqTerms => seq_terms::ABI,
            Kernel::Reduce => reduce::ABI,
            Kernel::Select => select::ABI,
            Kernel::Advantages => advantages::ABI,
            Kernel::Baseline(_) => baseline::ABI,
            Kernel::Copy => baseline::COPY_ABI,
            Kernel::Matmul { .. } => matmul::ABI,
            Kernel::HeadRows { .. } => head_rows::ABI,
        }
    }

    pub(crate) fn entry_point(self) -> &'static str {
        match self {
            Kernel::RowStats => "row_stats",
            Kernel::RowPartials => "row_partials",
            Kernel::KeptPartials => "kept_partials",
            Kernel::KeptSelect => "kept_select",
            Kernel::Combine => "combine",
            Kernel::Prepare => "prepare",
            Kernel::PolicyLoss => "policy_loss",
            Kernel::SeqTerms => "seq_terms",
            Kernel::Reduce => "reduce",
            Kernel::Select => "select_tokens",
            Kernel::Advantages => "advantages",
            Kernel::Baseline(BaselineOp::LogSoftmax) => "log_softmax",
            Kernel::Baseline(BaselineOp::Gather) => "gather",
            Kernel::Baseline(BaselineOp::MaskedMean) => "masked_mean",
            Kernel::Baseline(BaselineOp::ScatterGrad) => "scatter_grad",
            Kernel::Baseline(BaselineOp::LogSoftmaxBwd) => "log_softmax_bwd",
            Kernel::Copy => "copy",
            Kernel::Matmul { .. } => "matmul",
            Kernel::HeadRows { scatter: false, .. } => "gather_rows",
            Kernel::HeadRows { scatter: true, .. } => "scatter_rows",
        }
    }

    /// Row kernels read logits; the others work on O(rows) data.
    fn reads_logits(self) -> bool {
        matches!(
            self,
            Kernel::RowStats
                | Kernel::RowPartials
                | Kernel::KeptPartials
                | Kernel::KeptSelect
                | Kernel::PolicyLoss
                | Kernel::Baseline(_)
        )
    }
}

/// Everything that selects a distinct pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// The kernel.
    pub kernel: Kernel,
    /// The dtype of the logits the row kernels read (ignored by the others).
    pub logits: DType,
    /// Where the policy-loss kernel writes its gradient.
    pub grad: GradOut,
    /// The hardware paths the module is built for.
    pub paths: Paths,
    /// Logits rows start on group boundaries of their window (16 bytes of 16-bit
    /// values, 32 of f32), which ends on a 16-byte one: read eight at a time in one or
    /// two 16-byte loads.
    pub quad: bool,
    /// A separate gradient whose rows do too: written a group at a time (16-bit rows
    /// then share no word, so no atomics).
    pub grad_quad: bool,
    /// Each lane sweeps one contiguous block of a row (CPU adapters), not a stride.
    pub lane_blocks: bool,
    /// The row kernels' (policy_loss, row_partials) map of the logits to the
    /// sampler's z (`shaders/sampler/`); off, every module is the one it was before
    /// the sampler's options existed.
    pub sampler: SamplerMap,
}

impl PipelineKey {
    /// A kernel that does not touch logits: one pipeline whatever the dtype.
    pub(crate) fn small(kernel: Kernel, paths: Paths) -> Self {
        PipelineKey {
            kernel,
            logits: DType::F32,
            grad: GradOut::None,
            paths: Paths {
                shader_f16: false,
                subgroups: paths.subgroups,
            },
            quad: false,
            grad_quad: false,
            lane_blocks: false,
            sampler: SamplerMap::Off,
        }
    }

    /// The same pipeline with lane blocks (the CPU adapters' layout) on or off.
    pub(crate) fn with_lane_blocks(self, lane_blocks: bool) -> Self {
        PipelineKey {
            lane_blocks,
            ..self
        }
    }

    fn name(&self) -> String {
        let grad = match self.grad {
            GradOut::None => String::new(),
            GradOut::Separate(d) => format!("/grad-{d}"),
            GradOut::InPlace => "/in-place".to_string(),
        };
        if self.kernel.reads_logits() {
            let sampler = self.sampler.suffix();
            format!(
                "{:?}/{}{grad}/{}/{}{sampler}",
                self.kernel,
                self.logits,
                self.paths.describe(),
                self.layout()
            )
        } else if self.lane_blocks {
            // the matmul's CPU-shaped tile
            format!("{:?}/lane-blocks", self.kernel)
        } else {
            format!("{:?}", self.kernel)
        }
    }

    /// How a row kernel's lanes read and write: scalar or quad loads, quad stores of a
    /// separate gradient, strided lanes (GPUs) or lane blocks (CPU adapters). Only what
    /// changes the module is named, so every distinct module has one name.
    fn layout(&self) -> String {
        let grad_quad = self.grad_quad && matches!(self.grad, GradOut::Separate(_));
        let access = match (self.quad, grad_quad) {
            (false, false) => "scalar",
            (true, false) => "quad",
            (false, true) => "scalar+grad-quad",
            (true, true) => "quad+grad-quad",
        };
        let lanes = match self.lane_blocks {
            true => "lane-blocks",
            false => "strided",
        };
        format!("{access}/{lanes}")
    }

    fn grad_dtype(&self) -> Option<DType> {
        match self.grad {
            GradOut::None => None,
            GradOut::Separate(d) => Some(d),
            GradOut::InPlace => Some(self.logits),
        }
    }

    /// The full WGSL: the snippets, joined. `enable f16;` must open the module, so it
    /// comes first, then the generated declarations of the contract (`abi`).
    pub fn source(&self) -> String {
        let abi = abi::wgsl(self.kernel.abi());
        let snippets = self.snippets();
        let (head, body) = match snippets.first() {
            Some(s) if s.path == "enable_f16.wgsl" => (s.source, &snippets[1..]),
            _ => ("", &snippets[..]),
        };
        let mut parts = vec![head, &abi];
        parts.extend(body.iter().map(|s| s.source));
        parts.join("\n")
    }

    /// The entry point of the module this key builds.
    pub fn entry_point(&self) -> &'static str {
        self.kernel.entry_point()
    }

    /// Lanes a workgroup: the row kernels with lane blocks (CPU adapters) take fewer.
    pub fn workgroup(&self) -> u32 {
        match self.kernel {
            Kernel::RowStats | Kernel::RowPartials | Kernel::KeptSelect | Kernel::PolicyLoss => {
                row_workgroup(self.lane_blocks)
            }
            Kernel::Matmul { .. } => (self.matmul_tile() / self.matmul_block()).pow(2),
            _ => ROW_WORKGROUP,
        }
    }

    /// The side of the matmul's tile of C: 128 on GPUs, 32 with lane blocks (CPU
    /// adapters, whose SIMD batches of lanes hold a lane's accumulators in 16 registers).
    pub(crate) fn matmul_tile(&self) -> u32 {
        if self.lane_blocks {
            32
        } else {
            128
        }
    }

    /// The side of one lane's block of the matmul's tile (8 × 8 on GPUs, 4 × 4 on CPU
    /// adapters).
    fn matmul_block(&self) -> u32 {
        if self.lane_blocks {
            4
        } else {
            8
        }
    }

    /// Values of the override constants the module declares.
    pub fn constants(&self) -> Vec<(&'static str, f64)> {
        let mut c = vec![
            ("WG_SIZE", self.workgroup() as f64),
            ("LANE_BLOCKS", if self.lane_blocks { 1.0 } else { 0.0 }),
        ];
        if self.kernel.reads_logits() {
            let bf16 = |d: Option<DType>| if d == Some(DType::Bf16) { 1.0 } else { 0.0 };
            c.push(("LOGITS_BF16", bf16(Some(self.logits))));
            c.push(("GRAD_BF16", bf16(self.grad_dtype())));
        }
        if let Kernel::Matmul {
            a,
            b,
            a_k_contig,
            b_n_contig,
        } = self.kernel
        {
            c.push(("A_KIND", dtype_kind(a)));
            c.push(("B_KIND", dtype_kind(b)));
            c.push(("A_K_CONTIG", if a_k_contig { 1.0 } else { 0.0 }));
            c.push(("B_N_CONTIG", if b_n_contig { 1.0 } else { 0.0 }));
            c.push(("MM_TILE", self.matmul_tile() as f64));
            c.push(("MM_BLOCK", self.matmul_block() as f64));
        }
        if let Kernel::HeadRows { dtype, .. } = self.kernel {
            c.push(("KIND", dtype_kind(dtype)));
        }
        c
    }
}

/// The dtype codes of the matmul's and the head rows' overrides (codec.wgsl's
/// `decode_half` kinds).
fn dtype_kind(d: DType) -> f64 {
    match d {
        DType::F32 => 0.0,
        DType::F16 => 1.0,
        DType::Bf16 => 2.0,
    }
}

pub(crate) fn build_pipeline(device: &wgpu::Device, key: PipelineKey) -> wgpu::ComputePipeline {
    let label = key.name();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(key.source().into()),
    });
    let constants = key.constants();
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: None,
        module: &module,
        entry_point: Some(key.kernel.entry_point()),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            // every workgroup variable is written before it is read
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    })
}
