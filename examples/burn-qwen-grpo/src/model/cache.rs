//! The key/value cache of incremental decoding.

use burn::tensor::Tensor;

/// One layer's keys and values so far, `[B, kv_heads, T, D]`: the keys already
/// rotated (a key's rotation depends on its own position alone, so it is done once),
/// the heads not yet repeated for the query groups (the cache stays `kv_heads` wide).
#[derive(Debug, Clone)]
pub struct LayerCache {
    pub(crate) k: Tensor<4>,
    pub(crate) v: Tensor<4>,
}

/// Every layer's keys and values for the positions `0..len()` of a batch of sequences,
/// which `Qwen2::forward_cached` extends by the tokens it is given.
///
/// Positions are shared by the batch: sequence `b` of the next call continues sequence
/// `b` of this one at position `len()`. Batches whose prompts differ in length are
/// outside this cache (they need padding with per-sequence positions and a padding
/// mask); a group of rollouts of one prompt fits it.
///
/// Built on a device without autodiff (`model.valid()`), sampling keeps no graph.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<LayerCache>>,
    pub(crate) len: usize,
}

impl KvCache {
    /// An empty cache for a model of `layers` decoder layers.
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
            len: 0,
        }
    }

    /// Positions cached: the next token's position.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch size the cache holds, once it holds anything.
    pub fn batch(&self) -> Option<usize> {
        self.layers.iter().flatten().next().map(|c| c.k.dims()[0])
    }
}
