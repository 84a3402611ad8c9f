//! The backward, registered with Burn's autodiff. The forward already wrote the
//! gradient of the loss with respect to the logits (the fused kernel makes it in the
//! same pass as the loss); the backward multiplies it by the upstream gradient of the
//! loss (the chain rule: `∂out/∂logits = ∂out/∂loss · ∂loss/∂logits`). Where nothing
//! is tracked (`no_grad`, or logits that need no gradient) the forward computes none.
//!
//! Only the logits (for a head call: hidden and the weight) receive gradients: the
//! ids, mask, advantages and old, ref and rollout log-probs are constants of the loss,
//! as in verl and TRL (which detach them).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, TensorMetadata};
use burn::tensor::{DType, Shape};

use burn::backend::tensor::IntTensor;

use crate::backend::{
    AdvantagesOp, HeadResults, LossOp, LossResults, PolicyLossBackend, ProbHeadGrads, ProbOp,
    ProbResults, ProbRows, RowInputs,
};

/// `upstream · g`, the upstream gradient of the loss (shape `[1]`, f32) broadcast over
/// `g` in `g`'s dtype.
///
/// CubeCL's WGSL compiler has no bf16 kernels, so Burn's multiply of a bf16 gradient
/// fails there (loudly). `loss.backward()`'s upstream is exactly 1, which leaves the
/// gradient as the forward wrote it, bit for bit: for bf16 the upstream is read back
/// (4 bytes) and the multiply skipped where it is 1.
fn chain<B: Backend>(g: FloatTensor<B>, upstream: FloatTensor<B>) -> FloatTensor<B> {
    let dims = g.shape().num_dims();
    let dtype = g.dtype();
    if dtype == DType::BF16 {
        let one = pollster::block_on(B::float_into_data(upstream.clone()))
            .ok()
            .and_then(|d| d.convert::<f32>().try_to_vec::<f32>().ok())
            .is_some_and(|v| v == [1.0]);
        if one {
            return g;
        }
    }
    let scale = B::float_reshape(
        B::float_cast(upstream, dtype.into()),
        Shape::from(vec![1; dims]),
    );
    B::float_mul(g, scale)
}

/// A constant (untracked) tensor of the autodiff backend.
fn constant<B: Backend, C: CheckpointStrategy>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    <Autodiff<B, C> as AutodiffBackend>::from_inner(t)
}

/// The per-token inputs as the inner backend's: constants of the loss.
fn inner<B: Backend, C: CheckpointStrategy>(r: RowInputs<Autodiff<B, C>>) -> RowInputs<B> {
    RowInputs {
        targets: r.targets,
        mask: r.mask.into_primitive(),
        advantages: r.advantages.into_primitive(),
        old_logprobs: r.old_logprobs.into_primitive(),
        ref_logprobs: r.ref_logprobs.into_primitive(),
        rollout_logprobs: r.rollout_logprobs.into_primitive(),
        temperatures: r.temperatures.into_primitive(),
        keep_offsets: r.keep_offsets,
        keep_ids: r.keep_ids,
    }
}

#[derive(Debug)]
struct LossBackward;

impl<B: Backend> Backward<B, 1> for LossBackward {
    /// ∂loss/∂logits.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        if let Some(node) = logits {
            grads.register::<B>(node.id, chain::<B>(ops.state, upstream));
        }
    }
}

#[derive(Debug)]
struct HeadBackward;

impl<B: Backend> Backward<B, 2> for HeadBackward {
    /// ∂loss/∂hidden and ∂loss/∂weight.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [hidden, weight] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        let (gh, gw) = ops.state;
        if let Some(node) = hidden {
            grads.register::<B>(node.id, chain::<B>(gh, upstream.clone()));
        }
        if let Some(node) = weight {
            grads.register::<B>(node.id, chain::<B>(gw, upstream));
        }
    }
}

/// The log-prob primitive's backward: its vector-Jacobian product for the upstream
/// gradients of its statistics `[3, B, R]`, run when they are known.
#[derive(Debug)]
struct ProbBackward;

/// The primitive's per-row inputs kept for its backward: ids, temperatures, kept sets.
type ProbState<B> = (IntTensor<B>, FloatTensor<B>, IntTensor<B>, IntTensor<B>);

impl<B: PolicyLossBackend> Backward<B, 1> for ProbBackward {
    /// The logits, the per-row inputs and the call.
    type State = (FloatTensor<B>, ProbState<B>, ProbOp);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        let (x, (targets, temperatures, keep_offsets, keep_ids), op) = ops.state;
        if let Some(node) = logits {
            let rows = ProbRows {
                targets,
                temperatures,
                keep_offsets,
                keep_ids,
            };
            grads.register::<B>(node.id, B::logprobs_grad(x, rows, upstream, op));
        }
    }
}

/// The head form's backward: ∂L/∂hidden and ∂L/∂W for the upstream gradients of
/// its statistics, run when they are known.
#[derive(Debug)]
struct ProbHeadBackward;

impl<B: PolicyLossBackend> Backward<B, 2> for ProbHeadBackward {
    /// Hidden, the weight, the per-row inputs and the call.
    type State = (FloatTensor<B>, FloatTensor<B>, ProbState<B>, ProbOp);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [hidden, weight] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        let (h, w, (targets, temperatures, keep_offsets, keep_ids), op) = ops.state;
        if hidden.is_none() && weight.is_none() {
            return;
        }
        let rows = ProbRows {
            targets,
            temperatures,
            keep_offsets,
            keep_ids,
        };
        let g = B::logprobs_head_grad(h, w, rows, upstream, op);
        if let Some(node) = hidden {
            grads.register::<B>(node.id, g.grad_hidden);
        }
        if let Some(node) = weight {
            grads.register::<B>(node.id, g.grad_weight);
        }
    }
}

/// The primitive's per-row inputs as the inner backend's, and a copy kept for the
/// backward.
fn prob_rows<B: Backend, C: CheckpointStrategy>(
    rows: ProbRows<Autodiff<B, C>>,
) -> (ProbRows<B>, ProbState<B>) {
    let (targets, temps) = (rows.targets, rows.temperatures.into_primitive());
    let (offsets, ids) = (rows.keep_offsets, rows.keep_ids);
    let inner = ProbRows {
        targets: targets.clone(),
        temperatures: temps.clone(),
        keep_offsets: offsets.clone(),
        keep_ids: ids.clone(),
    };
    (inner, (targets, temps, offsets, ids))
}

impl<B: PolicyLossBackend, C: CheckpointStrategy> PolicyLossBackend for Autodiff<B, C> {
    fn policy_loss(
        logits: FloatTensor<Self>,
        rows: RowInputs<Self>,
        op: LossOp,
    ) -> LossResults<Self> {
        let prep = LossBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful();
        let want_grad = matches!(prep, OpsKind::Tracked(_));
        let r = B::policy_loss(
            logits.into_primitive(),
            inner(rows),
            LossOp { want_grad, ..op },
        );
        let loss = match prep {
            OpsKind::Tracked(prep) => prep.finish(r.grad.clone(), r.loss),
            OpsKind::UnTracked(prep) => prep.finish(r.loss),
        };
        let c = constant::<B, C>;
        LossResults {
            loss,
            logprobs: c(r.logprobs),
            entropy: c(r.entropy),
            lse: c(r.lse),
            metrics: c(r.metrics),
            grad: c(r.grad),
        }
    }

    fn policy_loss_head(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rows: RowInputs<Self>,
        op: LossOp,
    ) -> HeadResults<Self> {
        let prep = HeadBackward
            .prepare::<C>([hidden.node(), weight.node()])
            .compute_bound()
            .stateful();
        let want_grad = matches!(prep, OpsKind::Tracked(_));
        let (h, w) = (hidden.into_primitive(), weight.into_primitive());
        let r = B::policy_loss_head(h, w, inner(rows), LossOp { want_grad, ..op });
        let grads = (r.grad_hidden.clone(), r.grad_weight.clone());
        let loss = match prep {
            OpsKind::Tracked(prep) => prep.finish(grads, r.loss),
            OpsKind::UnTracked(prep) => prep.finish(r.loss),
        };
        let c = constant::<B, C>;
        HeadResults {
            loss,
            logprobs: c(r.logprobs),
            entropy: c(r.entropy),
            lse: c(r.lse),
            metrics: c(r.metrics),
            grad_hidden: c(r.grad_hidden),
            grad_weight: c(r.grad_weight),
        }
    }

    fn logprobs(
        logits: FloatTensor<Self>,
        rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> ProbResults<Self> {
        let prep = ProbBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful();
        let x = logits.into_primitive();
        let (inner, state) = prob_rows(rows);
        let r = B::logprobs(x.clone(), inner, upstream.into_primitive(), op.clone());
        let stats = match prep {
            OpsKind::Tracked(prep) => prep.finish((x, state, op), r.stats),
            OpsKind::UnTracked(prep) => prep.finish(r.stats),
        };
        ProbResults {
            stats,
            metrics: constant::<B, C>(r.metrics),
        }
    }

    fn logprobs_grad(
        logits: FloatTensor<Self>,
        rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> FloatTensor<Self> {
        let inner = ProbRows {
            targets: rows.targets,
            temperatures: rows.temperatures.into_primitive(),
            keep_offsets: rows.keep_offsets,
            keep_ids: rows.keep_ids,
        };
        let g = B::logprobs_grad(
            logits.into_primitive(),
            inner,
            upstream.into_primitive(),
            op,
        );
        constant::<B, C>(g)
    }

    fn logprobs_head(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> ProbResults<Self> {
        let prep = ProbHeadBackward
            .prepare::<C>([hidden.node(), weight.node()])
            .compute_bound()
            .stateful();
        let (h, w) = (hidden.into_primitive(), weight.into_primitive());
        let (inner, state) = prob_rows(rows);
        let r = B::logprobs_head(
            h.clone(),
            w.clone(),
            inner,
            upstream.into_primitive(),
            op.clone(),
        );
        let stats = match prep {
            OpsKind::Tracked(prep) => prep.finish((h, w, state, op), r.stats),
            OpsKind::UnTracked(prep) => prep.finish(r.stats),
        };
        ProbResults {
            stats,
            metrics: constant::<B, C>(r.metrics),
        }
    }

    fn logprobs_head_grad(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rows: ProbRows<Self>,
        upstream: FloatTensor<Self>,
        op: ProbOp,
    ) -> ProbHeadGrads<Self> {
        let (inner, _) = prob_rows(rows);
        let g = B::logprobs_head_grad(
            hidden.into_primitive(),
            weight.into_primitive(),
            inner,
            upstream.into_primitive(),
            op,
        );
        ProbHeadGrads {
            grad_hidden: constant::<B, C>(g.grad_hidden),
            grad_weight: constant::<B, C>(g.grad_weight),
        }
    }

    fn advantages(rewards: FloatTensor<Self>, op: AdvantagesOp) -> FloatTensor<Self> {
        constant::<B, C>(B::advantages(rewards.into_primitive(), op))
    }
}
