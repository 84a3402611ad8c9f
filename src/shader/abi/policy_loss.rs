//! The contract of `shaders/policy_loss.wgsl` (its host side: `src/kernels/policy_loss.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    /// The clipped objective's constants (terms.wgsl's clipped_term): the band
    /// `[1 − low, 1 + high]`, dual-clip's c, TRL's two-sided δ.
    #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Clip {
        pub(crate) low: f32,
        pub(crate) high: f32,
        pub(crate) c: f32,
        pub(crate) delta: f32,
    }

    /// VESPO's gamma weight (terms.wgsl's vespo_phi): (k, λ) for A ≥ 0 and for A < 0.
    #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Vespo {
        pub(crate) k_pos: f32,
        pub(crate) lambda_pos: f32,
        pub(crate) k_neg: f32,
        pub(crate) lambda_neg: f32,
    }

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
        /// the clipped objective's band, dual-clip's c (DPPO's truncation C), δ
        pub(crate) clip: Clip,
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
        /// DRO's β_D
        pub(crate) dro_beta: f32,
        /// the sampler (sampler/on.wgsl): the softcap c where > 0; row r's temperature
        /// at temperatures[temps + r] (NO_TEMPS: none)
        pub(crate) softcap: f32,
        pub(crate) temps: u32,
        pub(crate) vespo: Vespo,
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
    /// the 2026 options: the ratio is the sequence's (seqinfo.y: gspo, TRL's sequence
    /// level); the policy term's gradient comes through the sequence's addend alone;
    /// seqinfo.w is added to G; TRL's two-sided δ; a straight-through KL estimator;
    /// the KL term times the ratio; the off-policy mask's o (rowaux)
    pub(crate) SEQ_RATIO: u32 = 64;
    pub(crate) POLICY_VIA_SEQ: u32 = 128;
    pub(crate) SEQ_ADDEND: u32 = 256;
    pub(crate) HAS_DELTA: u32 = 512;
    pub(crate) KL_STRAIGHT: u32 = 1024;
    pub(crate) BIAS_KL: u32 = 2048;
    pub(crate) OFF_POLICY: u32 = 4096;
    /// the log-prob primitive: rowin holds (read, −a, b, c), the upstream gradients
    pub(crate) PRIMITIVE: u32 = 8192;
    /// the modes; gpg's loss is reinforce's
    pub(crate) MODE_REINFORCE: u32 = 0;
    pub(crate) MODE_PPO: u32 = 1;
    pub(crate) MODE_GSPO: u32 = 2;
    pub(crate) MODE_CISPO: u32 = 3;
    pub(crate) MODE_SAPO: u32 = 4;
    pub(crate) MODE_GPG: u32 = 5;
    pub(crate) MODE_CLIP_COV: u32 = 6;
    pub(crate) MODE_KL_COV: u32 = 7;
    pub(crate) MODE_GEO_MEAN: u32 = 8;
    pub(crate) MODE_DPPO_TV: u32 = 9;
    pub(crate) MODE_DPPO_KL: u32 = 10;
    pub(crate) MODE_DRO: u32 = 11;
    pub(crate) MODE_VESPO: u32 = 12;
    /// the KL estimators
    pub(crate) KL_K1: u32 = 0;
    pub(crate) KL_K2: u32 = 1;
    pub(crate) KL_K3: u32 = 2;
    pub(crate) KL_ABS: u32 = 3;
}

/// What terms.wgsl declares it needs of the contract (the row kernel's and the sequence
/// pass's modules both hold it).
pub(crate) const TERMS: &[super::Decl] = &[Clip::DECL, Vespo::DECL];

pub(crate) const ABI: Abi = &[COMMON, SHARED, TERMS, &[Params::DECL], CONSTS];
