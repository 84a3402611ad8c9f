//! The op as Burn's backend extension: one trait, implemented by Burn's wgpu backend
//! (`cube.rs`), by `Autodiff<B>` over it (`autodiff.rs`, where the backward is) and,
//! with the `fusion` feature, by `Fusion<B>` (generated: a lazy custom operation that
//! runs the wgpu implementation on the resolved buffers when the stream executes).
//!
//! Absent optional inputs (old, ref, rollout log-probs, temperatures) travel as the mask tensor,
//! flagged absent in [`LossOp`]: Fusion's custom operations take tensors, not
//! `Option`s, and the mask costs nothing to pass again.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Backend, ExtensionType};
use wgpu_policy_loss::{AdvantageEstimator, LogProbConfig, LossConfig};

/// The results of a loss call: the loss `[1]`, the per-token log-probs and entropies
/// `[B, R]`, the raw metrics `[Metrics::LEN]` (all f32) and the gradient of the loss
/// with respect to the logits (`[B, S, V]` in the logits' dtype), or a `[1]`
/// placeholder when [`LossOp::want_grad`] is off.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct LossResults<B: Backend> {
    pub loss: FloatTensor<B>,
    pub logprobs: FloatTensor<B>,
    pub entropy: FloatTensor<B>,
    pub lse: FloatTensor<B>,
    pub metrics: FloatTensor<B>,
    pub grad: FloatTensor<B>,
}

/// A head call's results: those of a loss call, with ∂L/∂hidden (`[B, S, H]`) and
/// ∂L/∂W (`[V, H]`) in place of the logits' gradient (each a `[1]` placeholder when
/// not asked for).
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct HeadResults<B: Backend> {
    pub loss: FloatTensor<B>,
    pub logprobs: FloatTensor<B>,
    pub entropy: FloatTensor<B>,
    pub lse: FloatTensor<B>,
    pub metrics: FloatTensor<B>,
    pub grad_hidden: FloatTensor<B>,
    pub grad_weight: FloatTensor<B>,
}

/// The log-prob primitive's results: `stats` `[3, B, R]` f32 (each predicting row's
/// `logp`, `H`, `lse`, one after the other) and the raw metrics `[Metrics::LEN]`.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct ProbResults<B: Backend> {
    pub stats: FloatTensor<B>,
    pub metrics: FloatTensor<B>,
}

/// The log-prob primitive's per-row inputs: the ids `[B, S]` (32 bits), the
/// temperatures `[B, R]` (any f32 tensor where [`ProbOp::has_temps`] is off) and the
/// kept sets' offsets `[B·R + 1]` and ids (the ids tensor twice where
/// [`ProbOp::has_kept`] is off).
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct ProbRows<B: Backend> {
    pub targets: IntTensor<B>,
    pub temperatures: FloatTensor<B>,
    pub keep_offsets: IntTensor<B>,
    pub keep_ids: IntTensor<B>,
}

/// The head form of the primitive's vector-Jacobian product: ∂L/∂hidden `[B, S, H]`
/// and ∂L/∂W `[V, H]`, in their dtype.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct ProbHeadGrads<B: Backend> {
    pub grad_hidden: FloatTensor<B>,
    pub grad_weight: FloatTensor<B>,
}

/// Everything a log-prob primitive call needs besides its tensors.
#[derive(Clone, Debug)]
pub struct ProbOp {
    pub config: LogProbConfig,
    pub positions: Positions,
    pub has_temps: bool,
    /// The sampler's given kept sets are given.
    pub has_kept: bool,
    /// Head calls: the logits rows made at once (`None`: the library's default).
    pub chunk_rows: Option<u32>,
    /// Which checked call an execution's error goes back to.
    pub call: CallId,
}

/// Which logits rows predict which ids, for logits `[B, S, V]` and ids `[B, S]`. The
/// per-token tensors (mask, per-token advantages, old/ref/rollout log-probs, and the
/// log-probs and entropies returned) are `[B, R]`, one per predicting row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Positions {
    /// Row `(b, s)` predicts id `(b, s)` (the caller has shifted already): `R = S`.
    #[default]
    Aligned,
    /// The seed's shift: row `(b, s)` predicts id `(b, s + 1)`; the last position of
    /// each sequence predicts nothing: `R = S − 1`.
    Shifted,
    /// A response after a prompt of `prompt_len ≥ 1` tokens: rows `prompt_len − 1 ..
    /// S − 1` predict ids `prompt_len .. S`: `R = S − prompt_len`. `Response {
    /// prompt_len: 1 }` is [`Positions::Shifted`].
    Response { prompt_len: usize },
}

impl Positions {
    /// The first id predicted in each sequence (0 when aligned).
    pub fn prompt_len(self) -> usize {
        match self {
            Positions::Aligned => 0,
            Positions::Shifted => 1,
            Positions::Response { prompt_len } => prompt_len,
        }
    }

    /// The number of predicting rows `R` per sequence of `seq_len` positions.
    pub fn rows_per_seq(self, seq_len: usize) -> usize {
        seq_len.saturating_sub(self.prompt_len())
    }
}

/// Everything a loss call needs besides its tensors. Built by
/// [`policy_loss`](crate::policy_loss), which checks the shapes against it.
#[derive(Clone, Debug)]
pub struct LossOp {
    pub config: LossConfig,
    pub positions: Positions,
    /// The advantages are `[B, R]` (else `[B]`, one per sequence).
    pub per_token_advantages: bool,
    pub has_old: bool,
    pub has_ref: bool,
    pub has_rollout: bool,
    /// The sampler's per-token temperatures are given.
    pub has_temps: bool,
    /// The sampler's given kept sets are given.
    pub has_kept: bool,
    /// Compute the gradient in the forward (set by the autodiff layer where the
    /// logits, or for a head call hidden or the weight, need one).
    pub want_grad: bool,
    /// Head calls: the logits rows made at once (`None`: the library's default).
    pub chunk_rows: Option<u32>,
    /// Which checked call an execution's error goes back to.
    pub call: CallId,
}

/// Names one checked call, so that an error met where the op executes reaches that
/// call and no other: with Fusion the op runs lazily, on whichever thread drains the
/// stream, after or between other calls on the device. [`CallId::default`] (0) is a
/// call nobody checks: its error is dropped and its f32 results are NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallId(u64);

impl CallId {
    /// A fresh id, never given out before in this process.
    pub fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        CallId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Advantages from rewards, one per sequence, in groups of `group_size` consecutive
/// sequences answering one prompt.
#[derive(Clone, Copy, Debug)]
pub struct AdvantagesOp {
    pub estimator: AdvantageEstimator,
    pub group_size: usize,
}

/// The per-token inputs of a call, beside the logits (or hidden and the weight): the
/// ids `[B, S]` (32 bits), and `[B, R]` f32 values (the advantages `[B, 1]` when one per
/// sequence). The autodiff layer treats them all as constants.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct RowInputs<B: Backend> {
    pub targets: IntTensor<B>,
    pub mask: FloatTensor<B>,
    pub advantages: FloatTensor<B>,
    pub old_logprobs: FloatTensor<B>,
    pub ref_logprobs: FloatTensor<B>,
    pub rollout_logprobs: FloatTensor<B>,
    pub temperatures: FloatTensor<B>,
    /// The kept sets' CSR, `[B·R + 1]` and `[nnz]` (32 bits; the ids tensor twice
    /// where [`LossOp::has_kept`] is off).
    pub keep_offsets: IntTensor<B>,
    pub keep_ids: IntTensor<B>,
}

/// The policy loss as a backend operation. Call it through
/// [`policy_loss`](crate::policy_loss), [`policy_loss_head`](crate::policy_loss_head)
/// and [`advantages`](crate::advantages), which check their arguments first.
#[backend_extension(Autodiff, Cube, Fusion: cfg(feature = "fusion"))]
pub trait PolicyLossBackend: Backend {
    /// The loss of logits `[B, S, V]` for ids `[B, S]`, and its gradient.
    #[fusion(meta = crate::meta::loss)]
    fn policy_loss(
        logits: FloatTensor<Self>,
        #[extension_type] rows: RowInputs<Self>,
        op: LossOp,
    ) -> LossResults<Self>;

    /// The loss straight from hidden states `[B, S, H]` and the lm-head weight
    /// `[V, H]` (the `[T, V]` logits never held whole), and its gradients.
    #[fusion(meta = crate::meta::head)]
    fn policy_loss_head(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] rows: RowInputs<Self>,
        op: LossOp,
    ) -> HeadResults<Self>;

    /// The log-prob primitive's statistics of logits `[B, S, V]` for the upstream
    /// gradients `upstream` `[3, B, R]` (`a`, `b`, `c`; which rows are read).
    #[fusion(meta = crate::meta::logprobs)]
    fn logprobs(
        logits: FloatTensor<Self>,
        #[extension_type] rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> ProbResults<Self>;

    /// The primitive's vector-Jacobian product: `∂L/∂logits` `[B, S, V]` for the
    /// upstream gradients `[3, B, R]` of its three outputs.
    #[fusion(meta = crate::meta::logprobs_grad)]
    fn logprobs_grad(
        logits: FloatTensor<Self>,
        #[extension_type] rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> FloatTensor<Self>;

    /// The log-prob primitive's statistics from hidden states `[B, S, H]` and the
    /// lm-head weight `[V, H]` (the logits never held whole), as [`Self::logprobs`].
    #[fusion(meta = crate::meta::logprobs_head)]
    fn logprobs_head(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> ProbResults<Self>;

    /// The head form's vector-Jacobian product: ∂L/∂hidden and ∂L/∂W for the
    /// upstream gradients `[3, B, R]` of its three outputs.
    #[fusion(meta = crate::meta::logprobs_head_grad)]
    fn logprobs_head_grad(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> ProbHeadGrads<Self>;

    /// Advantages `[N]` from rewards `[N]` (f32).
    #[fusion(meta = crate::meta::advantages)]
    fn advantages(rewards: FloatTensor<Self>, op: AdvantagesOp) -> FloatTensor<Self>;
}
