//! The model's shape, under the field names of Hugging Face's Qwen2 `config.json`.

use serde::{Deserialize, Serialize};

/// The fields of a Qwen2 `config.json` the architecture depends on. Fields HF gives
/// defaults for take HF's defaults when absent; any other field of the file is ignored
/// (the loader rejects the ones that would change the computation: see `load`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// Rows of the embedding (and of the lm-head).
    pub vocab_size: usize,
    /// The residual stream's width `H`.
    pub hidden_size: usize,
    /// The MLP's inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads; the head dimension is `hidden_size / num_attention_heads`.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention): each serves
    /// `num_attention_heads / num_key_value_heads` query heads. HF: the query heads'
    /// count when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// The RMSNorms' epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// The base of the rotary embedding's frequencies.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// The lm-head is the embedding matrix (no `lm_head.weight` of its own).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The context the checkpoint was trained for. Positions beyond it still compute
    /// (rotary embeddings have no table to run out of), with whatever quality.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
}

// HF's Qwen2Config defaults
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_positions() -> usize {
    32_768
}

impl Qwen2Config {
    /// Qwen2.5-0.5B (and its Instruct variant): 494M parameters, the lm-head tied.
    pub fn qwen2_5_0_5b() -> Self {
        Qwen2Config {
            vocab_size: 151_936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: Some(2),
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            tie_word_embeddings: true,
            max_position_embeddings: 32_768,
        }
    }

    /// A model small enough for the tests: every feature of the architecture (grouped
    /// heads, two layers) at a few thousand parameters.
    pub fn tiny() -> Self {
        Qwen2Config {
            vocab_size: 97,
            hidden_size: 32,
            intermediate_size: 48,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            max_position_embeddings: 128,
        }
    }

    /// Key/value heads, HF's default applied.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The dimension of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// What the model's construction assumes of the shape, as a sentence naming the
    /// field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} is 0"));
        }
        let (h, q, kv) = (self.hidden_size, self.num_attention_heads, self.kv_heads());
        if h % q != 0 {
            return Err(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {q}"
            ));
        }
        if q % kv != 0 {
            return Err(format!(
                "num_attention_heads {q} is not a multiple of num_key_value_heads {kv}"
            ));
        }
        // rotate_half pairs the first half of a head with the second
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("the head dimension {} is odd", self.head_dim()));
        }
        let finite_positive = |v: f64| v.is_finite() && v > 0.0;
        if !finite_positive(self.rms_norm_eps) {
            return Err(format!("rms_norm_eps is {}", self.rms_norm_eps));
        }
        if !finite_positive(self.rope_theta) {
            return Err(format!("rope_theta is {}", self.rope_theta));
        }
        Ok(())
    }

    /// The number of parameters a model of this shape has (the embedding counted once
    /// when tied).
    pub fn num_params(&self) -> usize {
        let (v, h, i) = (self.vocab_size, self.hidden_size, self.intermediate_size);
        let kv = self.kv_heads() * self.head_dim();
        let attention = (h * h + h) + 2 * (h * kv + kv) + h * h;
        let layer = attention + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * layer + h + head
    }
}
