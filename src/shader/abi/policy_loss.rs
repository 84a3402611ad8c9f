//! The contract of `shaders/policy_loss.wgsl` (its host side: `src/kernels/policy_loss.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        /// logits, targets and gradient; rows are grouped into the loss's sequences by
        /// x.rows_per_seq
        pub(crate) x: LayoutParams,
        pub(crate) y: LayoutParams,
        pub(crate) g: LayoutParams,
        /// the rows of this dispatch (a chunk of all rows, when one binding cannot hold them)
        pub(crate) row_base: u32,
        pub(crate) row_end: u32,
        pub(crate) vocab: u32,
        pub(crate) inv_tau: f32,
        pub(crate) phase: u32,
        pub(crate) mode: u32,
        pub(crate) kl_type: u32,
        pub(crate) flags: u32,
        pub(crate) clip_low: f32,
        pub(crate) clip_high: f32,
        pub(crate) clip_c: f32,
        pub(crate) kl_coef: f32,
        pub(crate) entropy_coeff: f32,
        /// where this part's rows and sequences start in the scratch buffers (a loss over
        /// logits in several buffers numbers the rows of every part one after the other)
        pub(crate) part_row: u32,
        pub(crate) part_seq: u32,
        /// sapo's gate temperatures, kl_cov's κ
        pub(crate) tau_pos: f32,
        pub(crate) tau_neg: f32,
        pub(crate) kappa: f32,
        /// a split vocabulary (shards.rs): this launch's columns are col_offset .. +vocab of
        /// vocab_total; the statistics of the whole row come from combine.wgsl (LOSS only)
        pub(crate) col_offset: u32,
        pub(crate) vocab_total: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
        pub(crate) _pad2: u32,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    /// phases: the statistics sweep (to rowout), the loss and gradient sweep
    pub(crate) PHASE_STATS: u32 = 1;
    pub(crate) PHASE_LOSS: u32 = 2;
    /// flags, with HAS_OLD and HAS_REF (mod.rs): dual-clip; select.wgsl's results to
    /// read (the rollout weight q; the covariance selection and the top-entropy mask);
    /// the entropy mask's renormalised weights c'_b
    pub(crate) HAS_DUAL: u32 = 4;
    pub(crate) HAS_ROLLOUT: u32 = 8;
    pub(crate) HAS_SELECTION: u32 = 16;
    pub(crate) RENORMALIZE: u32 = 32;
    /// the modes; gpg's loss is reinforce's
    pub(crate) MODE_REINFORCE: u32 = 0;
    pub(crate) MODE_PPO: u32 = 1;
    pub(crate) MODE_GSPO: u32 = 2;
    pub(crate) MODE_CISPO: u32 = 3;
    pub(crate) MODE_SAPO: u32 = 4;
    pub(crate) MODE_GPG: u32 = 5;
    pub(crate) MODE_CLIP_COV: u32 = 6;
    pub(crate) MODE_KL_COV: u32 = 7;
    /// the KL estimators
    pub(crate) KL_K1: u32 = 0;
    pub(crate) KL_K2: u32 = 1;
    pub(crate) KL_K3: u32 = 2;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL], CONSTS];
