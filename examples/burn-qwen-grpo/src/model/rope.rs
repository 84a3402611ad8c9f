//! Rotary position embeddings in Hugging Face's `rotate_half` convention.
//!
//! HF's Qwen2 rotates the pair `(x[i], x[i + D/2])` of a head by the angle
//! `position · θ^(−2i/D)` (the first half against the second), where Burn's
//! `RotaryEncoding` rotates adjacent pairs `(x[2i], x[2i + 1])`: the same rotation on a
//! permuted head, which a checkpoint's q/k projections do not expect. Hence this one.

use std::ops::Range;

use burn::tensor::{Device, Tensor, TensorData};

/// The frequencies of a head of dimension `head_dim`.
#[derive(Debug, Clone)]
pub struct Rope {
    head_dim: usize,
    theta: f64,
}

/// `cos` and `sin` of every position's angles, `[1, 1, S, D]` (the second half of a
/// row repeats the first), to broadcast over batch and heads.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64) -> Self {
        Rope { head_dim, theta }
    }

    /// The tables of `positions`. The angles are computed in f64 on the host and
    /// rounded once: HF forms them in f32, where the frequency's rounding and the
    /// product's cost about `position · 2⁻²³` radians (a few thousandths at position
    /// 32k); here the only error is the final rounding of cos and sin.
    pub fn tables(&self, positions: Range<usize>, device: &Device) -> RopeTables {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        let s = positions.len();
        let mut cos = Vec::with_capacity(s * d);
        let mut sin = Vec::with_capacity(s * d);
        for p in positions {
            let angles: Vec<f64> = (0..half)
                .map(|i| p as f64 * self.theta.powf(-2.0 * i as f64 / d as f64))
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos() as f32));
                sin.extend(angles.iter().map(|a| a.sin() as f32));
            }
        }
        let table = |v: Vec<f32>| -> Tensor<4> {
            Tensor::from_data(TensorData::new(v, [1, 1, s, d]), device)
        };
        RopeTables {
            cos: table(cos),
            sin: table(sin),
        }
    }
}

impl RopeTables {
    /// Rotates `x` `[B, heads, S, D]`: `x·cos + rotate_half(x)·sin`, with
    /// `rotate_half(x) = [−x₂, x₁]` for the halves `x₁, x₂` of each head.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let d = x.dims()[3];
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}
