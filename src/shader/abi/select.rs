//! The contract of `shaders/select.wgsl` (its host side: `src/kernels/select.rs`).

use super::aggregate::AGGREGATION;
use super::{Abi, COMMON, SHARED};
use super::{PartSpan, Teams};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        /// this launch's part (ROLLOUT, RENORM_GATHER)
        pub(crate) part: PartSpan,
        /// every row and sequence of the call (SELECT, RENORM_WEIGHTS)
        pub(crate) all_rows: u32,
        pub(crate) all_seqs: u32,
        pub(crate) phases: u32,
        /// COV_* (clip_cov, kl_cov) and ENTROPY_* (the top-entropy mask)
        pub(crate) cov: u32,
        pub(crate) entropy: u32,
        pub(crate) has_old: u32,
        /// rollout correction: level, mode, [C_lo, C_hi]
        pub(crate) level: u32,
        pub(crate) rollout_mode: u32,
        pub(crate) c_lo: f32,
        pub(crate) c_hi: f32,
        /// ρ_H
        pub(crate) rho: f32,
        pub(crate) cov_ratio: f32,
        pub(crate) cov_lb: f32,
        pub(crate) cov_ub: f32,
        pub(crate) seed: u32,
        pub(crate) clip_low: f32,
        pub(crate) clip_high: f32,
        pub(crate) agg_mode: u32,
        pub(crate) count_empty: u32,
        pub(crate) global_normalizer: f32,
        pub(crate) l_norm: f32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
        pub(crate) _pad2: u32,
        pub(crate) teams: Teams,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    /// Phases of `select.wgsl`: per part, or over every row / sequence.
    pub(crate) ROLLOUT: u32 = 1;
    pub(crate) SELECT: u32 = 2;
    pub(crate) RENORM_GATHER: u32 = 4;
    pub(crate) RENORM_WEIGHTS: u32 = 8;
    /// the covariance selection of clip_cov / kl_cov
    pub(crate) COV_NONE: u32 = 0;
    pub(crate) COV_KL: u32 = 1;
    pub(crate) COV_CLIP: u32 = 2;
    /// the top-entropy mask: none, kept tokens weighted by the mask's weights, or
    /// renormalised over the kept ones
    pub(crate) ENTROPY_NONE: u32 = 0;
    pub(crate) ENTROPY_QUANTILE: u32 = 1;
    pub(crate) ENTROPY_TOP_K: u32 = 2;
    /// the rollout correction's level and mode
    pub(crate) LEVEL_TOKEN: u32 = 0;
    pub(crate) LEVEL_SEQUENCE: u32 = 1;
    pub(crate) LEVEL_GEOMETRIC: u32 = 2;
    pub(crate) MODE_TRUNCATE: u32 = 0;
    pub(crate) MODE_MASK: u32 = 1;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, AGGREGATION, &[Params::DECL], CONSTS];
