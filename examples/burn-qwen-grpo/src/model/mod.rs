//! A decoder-only policy with the Qwen2 architecture.
//!
//! The forward returns the final hidden states `[B, S, H]` (after the last RMSNorm),
//! which `wgpu_policy_loss_burn::policy_loss_head` takes with [`Qwen2::lm_head_weight`]
//! `[V, H]`: the logits `[B, S, V]` need never be held whole. [`Qwen2::logits`] makes
//! them for the tests, and for losses written in Burn's own ops.

mod attention;
mod cache;
mod config;
mod layer;
mod mlp;
mod rope;

use std::ops::Range;

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, RmsNorm};
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use attention::Attention;
pub use cache::{KvCache, LayerCache};
pub use config::Qwen2Config;
pub use layer::DecoderLayer;
pub use mlp::Mlp;
pub use rope::{Rope, RopeTables};

use crate::Error;

/// Embedding, decoder layers, final norm and lm-head. The fields carry the
/// checkpoint's names (`model.embed_tokens`, `model.layers`, `model.norm`,
/// `lm_head`).
#[derive(Module, Debug)]
pub struct Qwen2 {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `[V, H]`, the checkpoint's own layout (the head's, too); `None` when tied to the
    /// embedding.
    pub lm_head: Option<Param<Tensor<2>>>,
    #[module(skip)]
    config: Qwen2Config,
    #[module(skip)]
    rope: Rope,
}

impl Qwen2 {
    /// A model of `config`'s shape, initialised at HF's scale (normal weights of
    /// standard deviation 0.02, `initializer_range`, the biases too where HF zeroes
    /// them; norms at 1). The parameters are made when first used, so a model about to
    /// be loaded costs nothing here.
    pub fn new(config: &Qwen2Config, device: &Device) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let (v, h) = (config.vocab_size, config.hidden_size);
        let lm_head = (!config.tie_word_embeddings).then(|| init.init([v, h], device));
        Ok(Qwen2 {
            embed_tokens: EmbeddingConfig::new(v, h)
                .with_initializer(init.clone())
                .init(device),
            layers: (0..config.num_hidden_layers)
                .map(|_| DecoderLayer::new(config, &init, device))
                .collect(),
            norm: layer::rms_norm(config, device),
            lm_head,
            config: config.clone(),
            rope: Rope::new(config.head_dim(), config.rope_theta),
        })
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.config
    }

    /// The final hidden states `[B, S, H]` of `tokens` `[B, S]` at positions `0..S`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let s = tokens.dims()[1];
        self.run(tokens, 0..s, None)
    }

    /// An empty cache for [`forward_cached`](Self::forward_cached).
    pub fn cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// The hidden states `[B, S, H]` of `tokens` `[B, S]` continuing the sequences
    /// `cache` holds, at positions `cache.len()..cache.len() + S`; their keys and
    /// values are appended to `cache`. A prompt (`S` tokens), then one token a step.
    ///
    /// # Panics
    ///
    /// If `cache` is another model's (another number of layers) or holds another
    /// batch size.
    pub fn forward_cached(&self, tokens: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let [b, s] = tokens.dims();
        assert_eq!(
            cache.layers.len(),
            self.layers.len(),
            "a cache of {} layers for a model of {}",
            cache.layers.len(),
            self.layers.len()
        );
        if let Some(cached) = cache.batch() {
            assert_eq!(cached, b, "a cache of {cached} sequences given {b}");
        }
        let start = cache.len;
        let hidden = self.run(tokens, start..start + s, Some(&mut cache.layers));
        cache.len += s;
        hidden
    }

    /// The lm-head's weight `[V, H]`: the embedding when tied (the gradient of a loss
    /// through it then reaches the embedding).
    pub fn lm_head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed_tokens.weight.val(),
        }
    }

    /// The logits `[B, S, V]` of hidden states `[B, S, H]`: `hidden · Wᵀ`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, s, h] = hidden.dims();
        let w = self.lm_head_weight();
        let v = w.dims()[0];
        hidden
            .reshape([b * s, h])
            .matmul(w.transpose())
            .reshape([b, s, v])
    }

    fn run(
        &self,
        tokens: Tensor<2, Int>,
        positions: Range<usize>,
        mut caches: Option<&mut Vec<Option<LayerCache>>>,
    ) -> Tensor<3> {
        let device = tokens.device();
        let rope = self.rope.tables(positions.clone(), &device);
        let mask = causal_mask(positions, &device);
        let mut x = self.embed_tokens.forward(tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            x = layer.forward(x, &rope, mask.as_ref(), cache);
        }
        self.norm.forward(x)
    }
}

/// The additive mask `[1, 1, S, T]` of queries at `positions` over the keys at
/// `0..positions.end`: 0 where the key is not later than the query, −∞ where it is
/// (its softmax weight then exactly 0, so a query's result does not depend on how
/// many masked keys sit beside it: the cached and the full forward agree). `None` for
/// a single query, which sees every key.
fn causal_mask(positions: Range<usize>, device: &Device) -> Option<Tensor<4>> {
    let (s, t) = (positions.len(), positions.end);
    if s <= 1 {
        return None;
    }
    let mask: Vec<f32> = positions
        .flat_map(|q| (0..t).map(move |k| if k > q { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Some(Tensor::from_data(
        TensorData::new(mask, [1, 1, s, t]),
        device,
    ))
}
