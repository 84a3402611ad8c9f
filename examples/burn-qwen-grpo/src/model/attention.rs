//! Grouped-query causal self-attention, as Qwen2's.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{activation, Device, Tensor};

use super::cache::LayerCache;
use super::config::Qwen2Config;
use super::rope::RopeTables;

/// q, k and v projections with biases (Qwen2 keeps them; most Llama-style models do
/// not), the output projection without. Burn's `Linear` holds its weight `[in, out]`,
/// the transpose of the checkpoint's `[out, in]`.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    pub fn new(config: &Qwen2Config, init: &Initializer, device: &Device) -> Self {
        let (h, d) = (config.hidden_size, config.head_dim());
        let (heads, kv_heads) = (config.num_attention_heads, config.kv_heads());
        let linear = |d_in, d_out, bias| {
            LinearConfig::new(d_in, d_out)
                .with_bias(bias)
                .with_initializer(init.clone())
                .init(device)
        };
        Attention {
            q_proj: linear(h, heads * d, true),
            k_proj: linear(h, kv_heads * d, true),
            v_proj: linear(h, kv_heads * d, true),
            o_proj: linear(heads * d, h, false),
            heads,
            kv_heads,
            head_dim: d,
        }
    }

    /// `x` `[B, S, H]` at the positions `rope` was made for → `[B, S, H]`. `mask` is
    /// the additive causal mask `[1, 1, S, T]` (0 where a query sees a key, −∞ where
    /// not) over the `T` keys: the cached ones, then these; `None` when every query sees
    /// every key. With `cache`, its keys and values come first and these are appended.
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        mask: Option<&Tensor<4>>,
        cache: Option<&mut Option<LayerCache>>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (heads, kv_heads, d) = (self.heads, self.kv_heads, self.head_dim);
        let split =
            |t: Tensor<3>, n: usize| -> Tensor<4> { t.reshape([b, s, n, d]).swap_dims(1, 2) };
        let q = rope.apply(split(self.q_proj.forward(x.clone()), heads));
        let mut k = rope.apply(split(self.k_proj.forward(x.clone()), kv_heads));
        let mut v = split(self.v_proj.forward(x), kv_heads);
        if let Some(cache) = cache {
            if let Some(past) = cache.take() {
                k = Tensor::cat(vec![past.k, k], 2);
                v = Tensor::cat(vec![past.v, v], 2);
            }
            *cache = Some(LayerCache {
                k: k.clone(),
                v: v.clone(),
            });
        }
        let group = heads / kv_heads;
        let (k, v) = (repeat_kv(k, group), repeat_kv(v, group));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (d as f64).sqrt());
        let scores = match mask {
            Some(m) => scores + m.clone(),
            None => scores,
        };
        let out = activation::softmax(scores, 3).matmul(v);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, heads * d]))
    }
}

/// `[B, kv_heads, T, D]` → `[B, kv_heads · group, T, D]`, query head `h` reading
/// key/value head `h / group` (HF's `repeat_kv`: the groups are contiguous).
fn repeat_kv(x: Tensor<4>, group: usize) -> Tensor<4> {
    if group == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .repeat_dim(2, group)
        .reshape([b, kv * group, t, d])
}
