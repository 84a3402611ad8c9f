//! The measurements behind `cargo bench` and the CLI's `bench`: the fused forward +
//! backward, the unfused baseline (the seed's PyTorch pattern, one kernel per op, every
//! intermediate materialised), and the device's copy bandwidth as the roofline.
//!
//! Times are GPU time from timestamp queries written around a batch of iterations when
//! the adapter has `TIMESTAMP_QUERY_INSIDE_ENCODERS`, wall time of the batch otherwise;
//! each sample is one batch, and the median of the samples is reported.

mod buffers;
mod head;
mod sampler;
mod tables;
mod timing;
mod workload;

pub use head::{measure_head, HeadBenchShape, HeadRow};
pub use sampler::{measure_sampler, SamplerRow};
pub use tables::*;
pub use timing::{time, Timing};
pub use workload::{agree, GradAgreement, Workload};

use crate::view::DType;

/// One benchmark shape: `rows × vocab` logits of `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchShape {
    pub rows: u32,
    pub vocab: u32,
    pub dtype: DType,
}

impl BenchShape {
    /// The shapes for a CPU rasteriser such as lavapipe, and, with `large`, the real-GPU
    /// shape of a long-context batch (T = 16384, V = 151936, bf16).
    pub fn defaults(large: bool) -> Vec<BenchShape> {
        let mut v = Vec::new();
        for (rows, vocab) in [(256, 32000), (256, 151936), (2048, 32000)] {
            for dtype in [DType::F32, DType::Bf16] {
                v.push(BenchShape { rows, vocab, dtype });
            }
        }
        if large {
            v.push(BenchShape {
                rows: 16384,
                vocab: 151936,
                dtype: DType::Bf16,
            });
        }
        v
    }

    /// Bytes of one pass over the logits.
    pub fn logits_bytes(&self) -> u64 {
        self.rows as u64 * self.vocab as u64 * self.dtype.size()
    }
}

impl std::fmt::Display for BenchShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{} {}", self.rows, self.vocab, self.dtype)
    }
}
