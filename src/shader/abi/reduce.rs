//! The contract of `shaders/reduce.wgsl` (its host side: `src/kernels/reduce.rs`).

use super::{Abi, COMMON, SHARED};
use crate::error::RowInput;

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) rows: u32,
        /// HAS_OLD, HAS_REF (prelude.wgsl): the optional inputs rowin holds
        pub(crate) inputs: u32,
        pub(crate) metrics_offset: u32,
        pub(crate) logp_offset: u32,
        pub(crate) entropy_offset: u32,
        pub(crate) write_rows: u32,
        /// select.wgsl ran: rowaux holds the rollout weights, the selection and the mask
        pub(crate) has_rollout: u32,
        pub(crate) has_selection: u32,
        /// the sampler's log-probs are read (a bad one is bad input): the rollout
        /// correction or the off-policy mask's σ
        pub(crate) reads_rollout: u32,
        /// rowaux holds the off-policy mask's o; VESPO's metric (VESPO_*)
        pub(crate) off_policy: u32,
        pub(crate) vespo: u32,
        pub(crate) lse_offset: u32,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    /// The slots of the metrics buffer, as `Metrics::from_slice` reads them; a row or
    /// code is stored as its u32 bits (a row 0xffffffff where there is none).
    pub(crate) M_LOSS: u32 = 0;
    pub(crate) M_PG_CLIPFRAC: u32 = 1;
    pub(crate) M_PG_CLIPFRAC_LOWER: u32 = 2;
    pub(crate) M_PPO_KL: u32 = 3;
    pub(crate) M_KL: u32 = 4;
    pub(crate) M_ENTROPY_MEAN: u32 = 5;
    pub(crate) M_NONFINITE_ROWS: u32 = 6;
    pub(crate) M_MASK_SUM: u32 = 7;
    pub(crate) M_INVALID_TARGET_ROW: u32 = 8;
    pub(crate) M_INVALID_TARGET_ID: u32 = 9;
    pub(crate) M_COV_SELECTED_FRAC: u32 = 10;
    pub(crate) M_ENTROPY_MASK_FRAC: u32 = 11;
    pub(crate) M_ROLLOUT_IS_MEAN: u32 = 12;
    pub(crate) M_ROLLOUT_IS_MIN: u32 = 13;
    pub(crate) M_ROLLOUT_IS_MAX: u32 = 14;
    pub(crate) M_ROLLOUT_IS_CLIPFRAC: u32 = 15;
    pub(crate) M_ROLLOUT_LOGP_DIFF_MAX: u32 = 16;
    pub(crate) M_INVALID_INPUT_ROWS: u32 = 17;
    pub(crate) M_INVALID_INPUT_ROW: u32 = 18;
    pub(crate) M_INVALID_INPUT_TENSOR: u32 = 19;
    pub(crate) M_INVALID_INPUT_VALUE: u32 = 20;
    pub(crate) M_OFF_POLICY_MASK_FRAC: u32 = 21;
    pub(crate) M_VESPO_PHI_SEQ_MEAN: u32 = 22;
    /// Values the reduce kernel writes.
    pub(crate) METRICS_LEN: u32 = 23;
    /// The tensor of a row's first bad input: 0 for none, else RowInput's code.
    pub(crate) BAD_NONE: u32 = 0;
    pub(crate) BAD_MASK: u32 = RowInput::Mask.code();
    pub(crate) BAD_ADVANTAGES: u32 = RowInput::Advantages.code();
    pub(crate) BAD_OLD: u32 = RowInput::OldLogprobs.code();
    pub(crate) BAD_REF: u32 = RowInput::RefLogprobs.code();
    pub(crate) BAD_ROLLOUT: u32 = RowInput::RolloutLogprobs.code();
    pub(crate) BAD_TEMPERATURES: u32 = RowInput::Temperatures.code();
    pub(crate) BAD_TARGETS: u32 = RowInput::Targets.code();
    /// Flags of `write_rows`: which per-row outputs the caller asked for.
    pub(crate) WRITE_LOGP: u32 = 1;
    pub(crate) WRITE_ENTROPY: u32 = 2;
    pub(crate) WRITE_LSE: u32 = 4;
    /// VESPO's metric in rowaux: none, φ_b / B on each sequence's first row, m·φ_t.
    pub(crate) VESPO_NONE: u32 = 0;
    pub(crate) VESPO_SEQ: u32 = 1;
    pub(crate) VESPO_TOKEN: u32 = 2;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL], CONSTS];
