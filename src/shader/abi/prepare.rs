//! The contract of `shaders/prepare.wgsl` (its host side: `src/kernels/prepare.rs`).

use super::aggregate::AGGREGATION;
use super::{Abi, COMMON, SHARED};
use super::{PartSpan, Teams};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        /// this part (a loss over logits in several buffers runs the gather once per
        /// part, then the weights once over every sequence)
        pub(crate) part: PartSpan,
        pub(crate) agg_mode: u32,
        pub(crate) flags: u32,
        /// token-mean: the caller's global normaliser, or 0 for Σ mask
        pub(crate) global_normalizer: f32,
        /// seq-mean-token-sum-norm: L_norm
        pub(crate) l_norm: f32,
        pub(crate) phase: u32,
        pub(crate) mask_offset: u32,
        pub(crate) adv_offset: u32,
        pub(crate) old_offset: u32,
        pub(crate) ref_offset: u32,
        /// sequences of every part
        pub(crate) all_seqs: u32,
        pub(crate) rollout_offset: u32,
        pub(crate) _pad0: u32,
        /// lanes per sequence for the token counts n_b
        pub(crate) teams: Teams,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    /// flags, with HAS_OLD and HAS_REF (mod.rs): one advantage a token (else one a
    /// sequence)
    pub(crate) ADV_PER_TOKEN: u32 = 8;
    /// with seq-mean modes: B' counts every sequence, empty ones too (TRL's grpo)
    pub(crate) COUNT_EMPTY: u32 = 16;
    /// the sampler's log-probs, for the rollout correction (select.wgsl)
    pub(crate) HAS_ROLLOUT: u32 = 32;
    /// the log-prob primitive: its upstream gradients in place of the loss's inputs
    pub(crate) PRIMITIVE: u32 = 64;
    /// phases: the part's per-row inputs and token counts n_b; the weights c_b of every
    /// sequence (which need every n_b)
    pub(crate) GATHER: u32 = 1;
    pub(crate) WEIGHTS: u32 = 2;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, AGGREGATION, &[Params::DECL], CONSTS];
