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
    /// The aggregated loss, `[1]`.
    pub loss: FloatTensor<B>,
    /// Each predicting row's target log-prob, `[B, R]`.
    pub logprobs: FloatTensor<B>,
    /// Each predicting row's entropy, `[B, R]`.
    pub entropy: FloatTensor<B>,
    /// Each predicting row's log-sum-exp, `[B, R]`.
    pub lse: FloatTensor<B>,
    /// The library's metrics buffer, `[Metrics::LEN]`, as `Metrics::from_slice` reads it.
    pub metrics: FloatTensor<B>,
    /// ∂Loss/∂logits `[B, S, V]`, or a `[1]` placeholder.
    pub grad: FloatTensor<B>,
}

/// A head call's results: those of a loss call, with ∂L/∂hidden (`[B, S, H]`) and
/// ∂L/∂W (`[V, H]`) in place of the logits' gradient (each a `[1]` placeholder when
/// not asked for).
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct HeadResults<B: Backend> {
    /// The aggregated loss, `[1]`.
    pub loss: FloatTensor<B>,
    /// Each predicting row's target log-prob, `[B, R]`.
    pub logprobs: FloatTensor<B>,
    /// Each predicting row's entropy, `[B, R]`.
    pub entropy: FloatTensor<B>,
    /// Each predicting row's log-sum-exp, `[B, R]`.
    pub lse: FloatTensor<B>,
    /// The library's metrics buffer, `[Metrics::LEN]`.
    pub metrics: FloatTensor<B>,
    /// ∂Loss/∂hidden `[B, S, H]` in hidden's dtype, or a `[1]` placeholder.
    pub grad_hidden: FloatTensor<B>,
    /// ∂Loss/∂W `[V, H]` in the weight's dtype, or a `[1]` placeholder.
    pub grad_weight: FloatTensor<B>,
}

/// The log-prob primitive's results: `stats` `[3, B, R]` f32 (each predicting row's
/// `logp`, `H`, `lse`, one after the other) and the raw metrics `[Metrics::LEN]`.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct ProbResults<B: Backend> {
    /// `[3, B, R]`: `logp`, `H`, `lse` of each predicting row.
    pub stats: FloatTensor<B>,
    /// The library's metrics buffer, `[Metrics::LEN]` (the bad rows).
    pub metrics: FloatTensor<B>,
}

/// The log-prob primitive's per-row inputs: the ids `[B, S]` (32 bits), the
/// temperatures `[B, R]` (any f32 tensor where [`ProbOp::has_temps`] is off) and the
/// kept sets' offsets `[B·R + 1]` and ids (the ids tensor twice where
/// [`ProbOp::has_kept`] is off).
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct ProbRows<B: Backend> {
    /// The ids `[B, S]`, 32 bits.
    pub targets: IntTensor<B>,
    /// The temperatures `[B, R]`, or a stand-in.
    pub temperatures: FloatTensor<B>,
    /// The kept sets' offsets `[B·R + 1]`, or a stand-in.
    pub keep_offsets: IntTensor<B>,
    /// The kept sets' ids `[nnz]`, or a stand-in.
    pub keep_ids: IntTensor<B>,
}

/// The head form of the primitive's vector-Jacobian product: ∂L/∂hidden `[B, S, H]`
/// and ∂L/∂W `[V, H]`, in their dtype.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct ProbHeadGrads<B: Backend> {
    /// ∂L/∂hidden `[B, S, H]`.
    pub grad_hidden: FloatTensor<B>,
    /// ∂L/∂W `[V, H]`.
    pub grad_weight: FloatTensor<B>,
}

/// Everything a log-prob primitive call needs besides its tensors.
#[derive(Clone, Debug)]
pub struct ProbOp {
    /// The sampler's options the statistics are taken under.
    pub config: LogProbConfig,
    /// Which logits rows predict which ids.
    pub positions: Positions,
    /// The sampler's per-row temperatures are given.
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
    Response {
        /// The prompt's length in tokens, at least 1.
        prompt_len: usize,
    },
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
    /// The loss, checked.
    pub config: LossConfig,
    /// Which logits rows predict which ids.
    pub positions: Positions,
    /// The advantages are `[B, R]` (else `[B]`, one per sequence).
    pub per_token_advantages: bool,
    /// The behaviour policy's log-probs are given.
    pub has_old: bool,
    /// The reference policy's log-probs are given.
    pub has_ref: bool,
    /// The sampler's log-probs are given.
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
    /// How a group's rewards become advantages.
    pub estimator: AdvantageEstimator,
    /// Rewards per group, at least 1, dividing N.
    pub group_size: usize,
}

/// The per-token inputs of a call, beside the logits (or hidden and the weight): the
/// ids `[B, S]` (32 bits), and `[B, R]` f32 values (the advantages `[B, 1]` when one per
/// sequence). The autodiff layer treats them all as constants.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct RowInputs<B: Backend> {
    /// The ids `[B, S]`, 32 bits.
    pub targets: IntTensor<B>,
    /// The response mask `[B, R]`.
    pub mask: FloatTensor<B>,
    /// The advantages `[B, R]`, or `[B, 1]` one per sequence.
    pub advantages: FloatTensor<B>,
    /// The behaviour policy's log-probs `[B, R]`, or the mask where
    /// [`LossOp::has_old`] is off.
    pub old_logprobs: FloatTensor<B>,
    /// The reference policy's log-probs `[B, R]`, or the mask where
    /// [`LossOp::has_ref`] is off.
    pub ref_logprobs: FloatTensor<B>,
    /// The sampler's log-probs `[B, R]`, or the mask where [`LossOp::has_rollout`] is
    /// off.
    pub rollout_logprobs: FloatTensor<B>,
    /// The sampler's temperatures `[B, R]`, or the mask where [`LossOp::has_temps`] is
    /// off.
    pub temperatures: FloatTensor<B>,
    /// The kept sets' CSR offsets `[B·R + 1]` (32 bits; the ids tensor where
    /// [`LossOp::has_kept`] is off).
    pub keep_offsets: IntTensor<B>,
    /// The kept sets' ids `[nnz]` (32 bits; the ids tensor where [`LossOp::has_kept`]
    /// is off).
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
