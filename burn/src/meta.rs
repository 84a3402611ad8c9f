//! The shapes and dtypes of the op's results, written once: the wgpu implementation
//! allocates by them and Fusion describes its lazy outputs by them.

use burn::tensor::{DType, Shape};
use wgpu_policy_loss::Metrics;

use crate::backend::LossOp;

/// One result: its shape and dtype.
pub(crate) type Spec = (Shape, DType);

/// Shapes and dtypes of a loss call's results, from the logits' `[B, S, V]`.
pub(crate) fn loss_results(logits: &Shape, dtype: DType, op: &LossOp) -> [Spec; 6] {
    let (b, s) = (logits[0], logits[1]);
    let rows = [b, op.positions.rows_per_seq(s)];
    let grad = if op.want_grad {
        (logits.clone(), dtype)
    } else {
        placeholder()
    };
    [
        (Shape::new([1]), DType::F32),
        (Shape::new(rows), DType::F32),
        (Shape::new(rows), DType::F32),
        (Shape::new(rows), DType::F32),
        (Shape::new([Metrics::LEN]), DType::F32),
        grad,
    ]
}

/// A head call's: a loss call's for logits `[B, S, V]`, then ∂L/∂hidden and ∂L/∂W.
pub(crate) fn head_results(hidden: &Shape, weight: &Shape, dtype: DType, op: &LossOp) -> [Spec; 7] {
    let logits = Shape::new([hidden[0], hidden[1], weight[0]]);
    let [loss, logp, ent, lse, metrics, _] = loss_results(&logits, dtype, op);
    let grad = |shape: &Shape| {
        if op.want_grad {
            (shape.clone(), dtype)
        } else {
            placeholder()
        }
    };
    [loss, logp, ent, lse, metrics, grad(hidden), grad(weight)]
}

/// The log-prob primitive's: its statistics `[3, B, R]` and the metrics.
pub(crate) fn prob_results(logits: &Shape, positions: crate::Positions) -> [Spec; 2] {
    let (b, s) = (logits[0], logits[1]);
    [
        (Shape::new([3, b, positions.rows_per_seq(s)]), DType::F32),
        (Shape::new([Metrics::LEN]), DType::F32),
    ]
}

/// The head form's: its statistics `[3, B, R]` for hidden `[B, S, H]`, and the metrics.
pub(crate) fn prob_head_results(hidden: &Shape, positions: crate::Positions) -> [Spec; 2] {
    prob_results(hidden, positions)
}

/// The head form's gradients: hidden's and the weight's shapes, in their dtype.
pub(crate) fn prob_head_grads(hidden: &Shape, weight: &Shape, dtype: DType) -> [Spec; 2] {
    [(hidden.clone(), dtype), (weight.clone(), dtype)]
}

/// What stands for a gradient nobody asked for.
pub(crate) fn placeholder() -> Spec {
    (Shape::new([1]), DType::F32)
}

#[cfg(feature = "fusion")]
mod fusion {
    use burn::backend::fusion::custom::TensorSpec;

    use super::Spec;
    use crate::backend::{
        AdvantagesOp, HeadResultsMetadata, LossOp, LossResultsMetadata, ProbHeadGradsMetadata,
        ProbOp, ProbResultsMetadata, ProbRowsMetadata, RowInputsMetadata,
    };

    fn spec((shape, dtype): Spec) -> TensorSpec {
        TensorSpec::new(shape, dtype)
    }

    pub(crate) fn loss(
        logits: &TensorSpec,
        _rows: &RowInputsMetadata,
        op: &LossOp,
    ) -> LossResultsMetadata {
        let [loss, logprobs, entropy, lse, metrics, grad] =
            super::loss_results(&logits.shape, logits.dtype, op).map(spec);
        LossResultsMetadata {
            loss,
            logprobs,
            entropy,
            lse,
            metrics,
            grad,
        }
    }

    pub(crate) fn head(
        hidden: &TensorSpec,
        weight: &TensorSpec,
        _rows: &RowInputsMetadata,
        op: &LossOp,
    ) -> HeadResultsMetadata {
        let specs = super::head_results(&hidden.shape, &weight.shape, hidden.dtype, op);
        let [loss, logprobs, entropy, lse, metrics, grad_hidden, grad_weight] = specs.map(spec);
        HeadResultsMetadata {
            loss,
            logprobs,
            entropy,
            lse,
            metrics,
            grad_hidden,
            grad_weight,
        }
    }

    pub(crate) fn logprobs(
        logits: &TensorSpec,
        _rows: &ProbRowsMetadata,
        _upstream: &TensorSpec,
        op: &ProbOp,
    ) -> ProbResultsMetadata {
        let [stats, metrics] = super::prob_results(&logits.shape, op.positions).map(spec);
        ProbResultsMetadata { stats, metrics }
    }

    pub(crate) fn logprobs_grad(
        logits: &TensorSpec,
        _rows: &ProbRowsMetadata,
        _upstream: &TensorSpec,
        _op: &ProbOp,
    ) -> TensorSpec {
        logits.clone()
    }

    pub(crate) fn logprobs_head(
        hidden: &TensorSpec,
        _weight: &TensorSpec,
        _rows: &ProbRowsMetadata,
        _upstream: &TensorSpec,
        op: &ProbOp,
    ) -> ProbResultsMetadata {
        let [stats, metrics] = super::prob_head_results(&hidden.shape, op.positions).map(spec);
        ProbResultsMetadata { stats, metrics }
    }

    pub(crate) fn logprobs_head_grad(
        hidden: &TensorSpec,
        weight: &TensorSpec,
        _rows: &ProbRowsMetadata,
        _upstream: &TensorSpec,
        _op: &ProbOp,
    ) -> ProbHeadGradsMetadata {
        let [grad_hidden, grad_weight] =
            super::prob_head_grads(&hidden.shape, &weight.shape, hidden.dtype).map(spec);
        ProbHeadGradsMetadata {
            grad_hidden,
            grad_weight,
        }
    }

    pub(crate) fn advantages(rewards: &TensorSpec, _op: &AdvantagesOp) -> TensorSpec {
        rewards.clone()
    }
}
#[cfg(feature = "fusion")]
pub(crate) use fusion::{
    advantages, head, logprobs, logprobs_grad, logprobs_head, logprobs_head_grad, loss,
};
