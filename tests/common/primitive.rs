//! The log-prob primitive's f64 reference over a batch (tests/logprobs.rs,
//! tests/eval_sampler.rs): each read row's sampled distribution and the logits'
//! vector-Jacobian product for the upstream gradients.

use wgpu_policy_loss::reference::sampler::{sampled_row, SampledRow, Sampler};

/// The reference of a batch of `rows × vocab` logits `x`.
pub struct PrimitiveRef {
    /// The VJP `[rows, vocab]` (zeros on unread rows).
    pub grad: Vec<f64>,
    /// 1 where a row is read (any upstream value not 0), else 0.
    pub read: Vec<f64>,
    /// Each read row's distribution, and its target where `a ≠ 0`.
    pub rows: Vec<Option<(SampledRow, Option<usize>)>>,
}

/// The primitive's reference: rows read where `a`, `b` or `c` is not 0, row r under
/// temperature `tau(r)` and `softcap`.
pub fn primitive_ref(
    x: &[f64],
    vocab: usize,
    targets: &[u32],
    (tau, softcap): (&dyn Fn(usize) -> f64, Option<f64>),
    up: [&[f32]; 3],
) -> PrimitiveRef {
    let sampler = Sampler {
        softcap,
        ..Sampler::default()
    };
    primitive_ref_with(x, vocab, targets, (tau, sampler), up)
}

/// [`primitive_ref`] under any sampler (its kept-set rules too).
pub fn primitive_ref_with(
    x: &[f64],
    vocab: usize,
    targets: &[u32],
    (tau, sampler): (&dyn Fn(usize) -> f64, Sampler),
    [a, b, c]: [&[f32]; 3],
) -> PrimitiveRef {
    let n = targets.len();
    let mut out = PrimitiveRef {
        grad: vec![0.0; n * vocab],
        read: vec![0.0; n],
        rows: Vec::with_capacity(n),
    };
    for r in 0..n {
        let up = (a[r] as f64, b[r] as f64, c[r] as f64);
        if up == (0.0, 0.0, 0.0) {
            out.rows.push(None);
            continue;
        }
        out.read[r] = 1.0;
        let row = sampled_row(&x[r * vocab..(r + 1) * vocab], tau(r), &sampler, None).unwrap();
        let y = (up.0 != 0.0).then_some(targets[r] as usize);
        out.grad[r * vocab..(r + 1) * vocab].copy_from_slice(&row.vjp(y, up.0, up.1, up.2));
        out.rows.push(Some((row, y)));
    }
    out
}
