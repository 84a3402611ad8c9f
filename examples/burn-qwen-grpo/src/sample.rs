//! The rollout's sampler, as an inference engine samples: each row's logits divided by
//! the temperature, the top-p kept set, one token drawn from the kept set
//! renormalised. It records what the loss replays: each token's kept set (CSR, as
//! vLLM's `SamplingMask`) and the sampler's own log-prob of it under that set.
//!
//! Top-p keeps a token when the mass of the tokens strictly more probable than it is
//! below p (docs/MATH.md, "The sampler's distribution"): a prefix of the row sorted
//! by probability, and tied tokens kept or dropped together. On the sorted row that is
//! the positions whose mass above is below p, widened to every token as probable as
//! the last of them. Everything up to the draw runs on the device; only the kept
//! columns of the sorted ids come back.

use burn::tensor::{activation, Int, Tensor, TensorData};

/// One step's draw for each of `B` rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    /// The token drawn in each row.
    pub tokens: Vec<u32>,
    /// Its log-prob under the row's kept set: `ln(p_y / Σ_{v∈K} p_v)`, p the softmax of
    /// logits / τ.
    pub logprobs: Vec<f32>,
    /// Each row's kept ids, most probable first.
    pub kept: Vec<Vec<u32>>,
}

/// Draws one token a row of `logits` `[B, V]` at `temperature` under top-p `top_p` ∈
/// (0, 1], with `uniforms[b]` ∈ [0, 1) row b's uniform draw (the caller's seeded
/// generator, so that a rollout replays bit for bit).
pub fn sample_top_p(logits: Tensor<2>, temperature: f32, top_p: f32, uniforms: &[f32]) -> Draw {
    let [b, v] = logits.dims();
    assert_eq!(uniforms.len(), b, "one uniform a row");
    let device = logits.device();
    let logp = activation::log_softmax(logits / temperature, 1);
    let (logp_sorted, ids) = logp.sort_descending_with_indices(1);
    let p = logp_sorted.clone().exp();
    // the mass strictly above each sorted position (ties widened below)
    let above = p.clone().cumsum(1) - p.clone();
    let n = above.lower_elem(top_p).int().sum_dim(1).clamp_min(1);
    // the last kept position's probability; every token as probable is kept too
    let p_last = p.clone().gather(1, n - 1);
    let kept = p.clone().greater_equal(p_last.expand([b, v]));
    let n = kept.clone().int().sum_dim(1);
    let mass = (p.clone() * kept.clone().float()).sum_dim(1);
    // the draw: the first kept position whose cumulative mass passes u·mass
    let u = Tensor::<2>::from_data(TensorData::new(uniforms.to_vec(), [b, 1]), &device);
    let reach = (p * kept.float()).cumsum(1);
    let before = reach
        .lower((u * mass.clone()).expand([b, v]))
        .int()
        .sum_dim(1);
    let at = before.min_pair(n.clone() - 1);
    let logprob = logp_sorted.gather(1, at.clone()) - mass.log();
    let token = ids.clone().gather(1, at);
    read_back(ids, n, token, logprob)
}

/// The draw's host side: each row's first `n` sorted ids (only the widest row's
/// columns come back), the token and its log-prob.
fn read_back(
    ids: Tensor<2, Int>,
    n: Tensor<2, Int>,
    token: Tensor<2, Int>,
    logprob: Tensor<2>,
) -> Draw {
    let ints = |t: Tensor<2, Int>| -> Vec<i64> {
        t.into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .expect("ids read back as integers")
    };
    let counts = ints(n);
    let widest = counts.iter().copied().max().unwrap_or(1) as usize;
    let cols = ints(ids.narrow(1, 0, widest));
    let kept = counts
        .iter()
        .enumerate()
        .map(|(r, &c)| {
            cols[r * widest..r * widest + c as usize]
                .iter()
                .map(|&i| i as u32)
                .collect()
        })
        .collect();
    Draw {
        tokens: ints(token).into_iter().map(|t| t as u32).collect(),
        logprobs: logprob
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("log-probs read back as f32"),
        kept,
    }
}

/// The kept sets of a rollout's predicted tokens as CSR over its rows, in the order
/// the loss reads them: `offsets` `[rows + 1]` and `ids`.
pub fn csr(kept: &[Vec<u32>]) -> (Vec<i32>, Vec<i32>) {
    let mut offsets = Vec::with_capacity(kept.len() + 1);
    let mut ids = Vec::new();
    offsets.push(0);
    for row in kept {
        ids.extend(row.iter().map(|&i| i as i32));
        offsets.push(ids.len() as i32);
    }
    (offsets, ids)
}
