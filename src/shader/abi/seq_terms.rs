//! The contract of `shaders/seq_terms.wgsl` (its host side: `src/kernels/seq_terms.rs`).

use super::policy_loss::{Clip, Vespo, TERMS};
use super::{Abi, COMMON, SHARED};
use super::{PartSpan, Teams};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) part: PartSpan,
        pub(crate) teams: Teams,
        /// the clipped objective's constants and VESPO's weight, as the row kernel's
        pub(crate) clip: Clip,
        pub(crate) vespo: Vespo,
        /// KIND_*: which sequence value goes to seqinfo.y
        pub(crate) kind: u32,
        /// SEQ_* below
        pub(crate) flags: u32,
        /// HAS_OLD, HAS_REF
        pub(crate) inputs: u32,
        /// HAS_DUAL, HAS_DELTA (policy_loss.rs) for the clipped objective
        pub(crate) clip_flags: u32,
        /// the policy mode (policy_loss.rs's MODE_*) whose slope the addend sums
        pub(crate) policy: u32,
        pub(crate) kl_type: u32,
        /// every sequence of the call (GMPO's B, VESPO's metric)
        pub(crate) all_seqs: u32,
        pub(crate) kl_coef: f32,
        pub(crate) tau_pos: f32,
        pub(crate) tau_neg: f32,
        /// the off-policy mask's θ
        pub(crate) threshold: f32,
        pub(crate) _pad0: u32,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    /// The sequence value: none, a sequence ratio s_b (GSPO, TRL's sequence level),
    /// GMPO's Ā_b·ρ_b, VESPO's L_b.
    pub(crate) KIND_NONE: u32 = 0;
    pub(crate) KIND_RATIO: u32 = 1;
    pub(crate) KIND_GEO: u32 = 2;
    pub(crate) KIND_VESPO: u32 = 3;
    /// flags: select.wgsl's rollout weights q and entropy mask e to read; the off-policy
    /// mask, its σ from the sampler's log-probs; the addend's policy share (ppo_clip,
    /// sapo at the sequence level) and KL share (bias-corrected KL), the policy weight
    /// renormalised (c'_b); VESPO's metric per token
    pub(crate) SEQ_HAS_Q: u32 = 1;
    pub(crate) SEQ_HAS_E: u32 = 2;
    pub(crate) SEQ_OFF_POLICY: u32 = 4;
    pub(crate) SEQ_SIGMA_ROLLOUT: u32 = 8;
    pub(crate) SEQ_ADD_POLICY: u32 = 16;
    pub(crate) SEQ_ADD_KL: u32 = 32;
    pub(crate) SEQ_RENORM: u32 = 64;
    pub(crate) SEQ_VESPO_TOKEN: u32 = 128;
}

pub(crate) const ABI: Abi = &[
    COMMON,
    SHARED,
    TERMS,
    &[Params::DECL],
    CONSTS,
    super::policy_loss::CONSTS,
];
