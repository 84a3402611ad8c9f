//! Qwen2's forward in f64 on the host, straight loops over a checkpoint file's own
//! tensors (read here with `safetensors` and `half`, not with the crate's loader): HF's
//! `Qwen2ForCausalLM` written out, the yardstick of the Burn model.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::common::Shape;

pub struct Reference {
    shape: Shape,
    tensors: HashMap<String, Vec<f64>>,
}

impl Reference {
    /// The tensors of `dir/model.safetensors`, widened to f64 exactly.
    pub fn read(dir: &Path, shape: Shape) -> Reference {
        let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
        let st = SafeTensors::deserialize(&bytes).expect("safetensors");
        let tensors = st
            .iter()
            .map(|(name, view)| {
                let b = view.data();
                let v: Vec<f64> = match view.dtype() {
                    Dtype::F32 => b
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                    Dtype::BF16 => b
                        .chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                        .collect(),
                    Dtype::F16 => b
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                        .collect(),
                    d => panic!("{name}: dtype {d:?}"),
                };
                (name.to_string(), v)
            })
            .collect();
        Reference { shape, tensors }
    }

    fn t(&self, name: &str) -> &[f64] {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    /// The logits `[S, V]` of one sequence, at positions `0..S`.
    pub fn logits(&self, tokens: &[usize]) -> Vec<f64> {
        let sh = self.shape;
        let (h, v) = (sh.hidden, sh.vocab);
        let emb = self.t("model.embed_tokens.weight");
        let mut x: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| emb[t * h..(t + 1) * h].to_vec())
            .collect();
        for l in 0..sh.layers {
            let p = format!("model.layers.{l}");
            let n: Vec<Vec<f64>> = x
                .iter()
                .map(|r| self.rms_norm(r, &format!("{p}.input_layernorm.weight")))
                .collect();
            let attn = self.attention(&p, &n);
            add(&mut x, &attn);
            let n: Vec<Vec<f64>> = x
                .iter()
                .map(|r| self.rms_norm(r, &format!("{p}.post_attention_layernorm.weight")))
                .collect();
            let mlp: Vec<Vec<f64>> = n.iter().map(|r| self.mlp(&p, r)).collect();
            add(&mut x, &mlp);
        }
        let head = if sh.tied {
            self.t("model.embed_tokens.weight")
        } else {
            self.t("lm_head.weight")
        };
        x.iter()
            .flat_map(|r| matvec(head, v, &self.rms_norm(r, "model.norm.weight")))
            .collect()
    }

    /// `x / sqrt(mean(x²) + eps) · weight`.
    fn rms_norm(&self, x: &[f64], weight: &str) -> Vec<f64> {
        let w = self.t(weight);
        let ms = x.iter().map(|a| a * a).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + self.shape.eps).sqrt();
        x.iter().zip(w).map(|(a, g)| a * r * g).collect()
    }

    /// `W x + b` for HF's `nn.Linear` (`W` `[out, in]`).
    fn linear(&self, name: &str, x: &[f64], bias: bool) -> Vec<f64> {
        let w = self.t(&format!("{name}.weight"));
        let mut y = matvec(w, w.len() / x.len(), x);
        if bias {
            for (a, b) in y.iter_mut().zip(self.t(&format!("{name}.bias"))) {
                *a += b;
            }
        }
        y
    }

    /// Causal grouped-query attention over the normed rows `n` `[S][H]`.
    fn attention(&self, p: &str, n: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let sh = self.shape;
        let d = sh.head_dim();
        let group = sh.heads / sh.kv_heads;
        let proj = |which: &str, rope: bool| -> Vec<Vec<f64>> {
            n.iter()
                .enumerate()
                .map(|(pos, r)| {
                    let mut y = self.linear(&format!("{p}.self_attn.{which}"), r, true);
                    if rope {
                        y.chunks_mut(d).for_each(|head| rotate(head, pos, sh.theta));
                    }
                    y
                })
                .collect()
        };
        let (q, k, v) = (
            proj("q_proj", true),
            proj("k_proj", true),
            proj("v_proj", false),
        );
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![vec![0.0; sh.heads * d]; n.len()];
        for (s, o) in out.iter_mut().enumerate() {
            for head in 0..sh.heads {
                let (qh, kvh) = (head * d, (head / group) * d);
                let scores: Vec<f64> = (0..=s)
                    .map(|t| dot(&q[s][qh..qh + d], &k[t][kvh..kvh + d]) * scale)
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (t, w) in e.iter().enumerate() {
                    for j in 0..d {
                        o[qh + j] += w / z * v[t][kvh + j];
                    }
                }
            }
        }
        out.iter()
            .map(|r| self.linear(&format!("{p}.self_attn.o_proj"), r, false))
            .collect()
    }

    /// `down(silu(gate(x)) · up(x))`.
    fn mlp(&self, p: &str, x: &[f64]) -> Vec<f64> {
        let g = self.linear(&format!("{p}.mlp.gate_proj"), x, false);
        let u = self.linear(&format!("{p}.mlp.up_proj"), x, false);
        let a: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        self.linear(&format!("{p}.mlp.down_proj"), &a, false)
    }
}

/// HF's `apply_rotary_pos_emb` on one head: `x·cos + rotate_half(x)·sin`, the pair
/// `(x[i], x[i + D/2])` turned by `pos · θ^(−2i/D)`.
fn rotate(x: &mut [f64], pos: usize, theta: f64) {
    let d = x.len();
    for i in 0..d / 2 {
        let angle = pos as f64 * theta.powf(-2.0 * i as f64 / d as f64);
        let (c, s) = (angle.cos(), angle.sin());
        let (a, b) = (x[i], x[i + d / 2]);
        x[i] = a * c - b * s;
        x[i + d / 2] = b * c + a * s;
    }
}

/// `W x` for `W` `[rows, x.len()]` row-major.
fn matvec(w: &[f64], rows: usize, x: &[f64]) -> Vec<f64> {
    let cols = x.len();
    assert_eq!(w.len(), rows * cols, "matrix shape");
    (0..rows)
        .map(|r| dot(&w[r * cols..(r + 1) * cols], x))
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn add(x: &mut [Vec<f64>], y: &[Vec<f64>]) {
    for (r, d) in x.iter_mut().zip(y) {
        for (a, b) in r.iter_mut().zip(d) {
            *a += b;
        }
    }
}
