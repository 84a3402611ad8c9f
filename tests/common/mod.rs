//! Shared by every test file: the contexts to test (every adapter, each on its native
//! paths and on the forced fallback), random data, and error measurement against the
//! f64 reference.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use wgpu_policy_loss::half::{bf16, f16};
use wgpu_policy_loss::{Context, DType, Paths};

/// Every adapter found, on the paths it has and, where those differ, on the fallback.
/// No adapter is a loud failure: a GPU test suite that runs nothing must not pass.
pub fn contexts() -> &'static [Context] {
    static CONTEXTS: OnceLock<Vec<Context>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        let mut out = Vec::new();
        for ctx in Context::all() {
            let ctx = ctx.unwrap_or_else(|e| panic!("an adapter refused a device: {e}"));
            if ctx.paths() != Paths::FALLBACK {
                out.push(ctx.with_paths(Paths::FALLBACK));
            }
            out.push(ctx);
        }
        assert!(
            !out.is_empty(),
            "no GPU adapter found: these tests need one. On a machine without a GPU run \
             ./scripts/test.sh, which installs Mesa's lavapipe (Vulkan) and llvmpipe (GL)."
        );
        out
    })
}

/// "adapter (backend) [paths]", for assertion messages.
pub fn name(ctx: &Context) -> String {
    format!("{} [{}]", ctx.describe(), ctx.paths().describe())
}

pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// Logits stored in one of the three dtypes, with their exact f64 values.
pub struct Logits {
    pub dtype: DType,
    pub f32: Vec<f32>,
    pub f16: Vec<f16>,
    pub bf16: Vec<bf16>,
}

impl Logits {
    /// Rounds `values` to `dtype`.
    pub fn from_f32(dtype: DType, values: &[f32]) -> Self {
        let mut l = Logits {
            dtype,
            f32: Vec::new(),
            f16: Vec::new(),
            bf16: Vec::new(),
        };
        match dtype {
            DType::F32 => l.f32 = values.to_vec(),
            DType::F16 => l.f16 = values.iter().map(|&v| f16::from_f32(v)).collect(),
            DType::Bf16 => l.bf16 = values.iter().map(|&v| bf16::from_f32(v)).collect(),
        }
        l
    }

    pub fn host(&self) -> wgpu_policy_loss::HostLogits<'_> {
        use wgpu_policy_loss::HostLogits as H;
        match self.dtype {
            DType::F32 => H::F32(&self.f32),
            DType::F16 => H::F16(&self.f16),
            DType::Bf16 => H::Bf16(&self.bf16),
        }
    }

    /// The stored values, exactly, as f64.
    pub fn values(&self) -> Vec<f64> {
        let h = self.host();
        (0..h.len()).map(|i| h.get(i)).collect()
    }

    pub fn bytes(&self) -> &[u8] {
        match self.dtype {
            DType::F32 => bytemuck::cast_slice(&self.f32),
            DType::F16 => bytemuck::cast_slice(&self.f16),
            DType::Bf16 => bytemuck::cast_slice(&self.bf16),
        }
    }
}

/// Normal-ish logits with scale `scale` (sum of uniforms), like a language model's.
pub fn random_logits(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let u: f32 = (0..4).map(|_| r.random_range(-1.0f32..1.0)).sum();
            u * scale
        })
        .collect()
}

pub fn random_targets(seed: u64, rows: usize, vocab: u32) -> Vec<u32> {
    let mut r = rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..rows).map(|_| r.random_range(0..vocab)).collect()
}

/// The tolerance every row statistic is held to, against the f64 reference computed on
/// the same (already rounded) logits: the kernels accumulate in f32, so the error
/// grows with the magnitude of the values involved.
///
/// |gpu − ref| ≤ 2e-5 + 1e-6 · scale, where scale is max(|lse|, max|z|) for the row
/// (about 16 f32 ulps of the largest value; lavapipe's worst seen is ~5e-6 at V=151936).
pub fn tolerance(scale: f64) -> f64 {
    2e-5 + 1e-6 * scale
}

/// Largest error seen and where, over many rows.
#[derive(Debug, Default, Clone, Copy)]
pub struct MaxErr {
    pub abs: f64,
    pub row: usize,
}

impl MaxErr {
    pub fn add(&mut self, row: usize, err: f64) {
        if err > self.abs || err.is_nan() {
            self.abs = err;
            self.row = row;
        }
    }
}

/// Compares one value: both non-finite in the same way, or within `tol`.
pub fn close(got: f32, want: f64, tol: f64) -> Result<f64, String> {
    let g = got as f64;
    if want.is_nan() {
        return if g.is_nan() {
            Ok(0.0)
        } else {
            Err(format!("got {g}, want NaN"))
        };
    }
    if want.is_infinite() {
        return if g == want {
            Ok(0.0)
        } else {
            Err(format!("got {g}, want {want}"))
        };
    }
    let err = (g - want).abs();
    if err <= tol {
        Ok(err)
    } else {
        Err(format!(
            "got {g}, want {want}, |err| {err:.3e} > tol {tol:.3e}"
        ))
    }
}

/// Runs the recording API on views the caller builds over uploaded buffers, and reads
/// the per-row results back.
pub fn run_views(
    ctx: &Context,
    logits_bytes: &[u8],
    targets: &[u32],
    tau: f32,
    make: impl for<'a> FnOnce(
        &'a wgpu_policy_loss::wgpu::Buffer,
        &'a wgpu_policy_loss::wgpu::Buffer,
    ) -> (
        wgpu_policy_loss::LogitsView<'a>,
        wgpu_policy_loss::TargetsView<'a>,
    ),
) -> wgpu_policy_loss::Result<wgpu_policy_loss::RowStatsHost> {
    let x = ctx.upload("logits", logits_bytes);
    let y = ctx.upload("targets", bytemuck::cast_slice(targets));
    let (lv, tv) = make(&x, &y);
    let rows = lv.rows;
    let out = wgpu_policy_loss::RowStatsBuffers::new(ctx, rows);
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu_policy_loss::wgpu::CommandEncoderDescriptor { label: None });
    ctx.record_row_stats(&mut enc, &lv, &tv, tau, &out.outputs())?;
    let mut got = ctx.read_f32s(enc, &[&out.lse, &out.logp, &out.entropy], rows as usize)?;
    let entropy = got.pop().unwrap();
    let logp = got.pop().unwrap();
    let lse = got.pop().unwrap();
    Ok(wgpu_policy_loss::RowStatsHost { lse, logp, entropy })
}

/// Bit patterns of every output, for exact comparisons.
pub fn bits(r: &wgpu_policy_loss::RowStatsHost) -> Vec<[u32; 3]> {
    (0..r.lse.len())
        .map(|i| {
            [
                r.lse[i].to_bits(),
                r.logp[i].to_bits(),
                r.entropy[i].to_bits(),
            ]
        })
        .collect()
}
