//! One decoder layer: pre-norm attention and pre-norm MLP, each added to the residual.

use burn::module::Module;
use burn::nn::{Initializer, RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Tensor};

use super::attention::Attention;
use super::cache::LayerCache;
use super::config::Qwen2Config;
use super::mlp::Mlp;
use super::rope::RopeTables;

/// The fields carry the checkpoint's names (`model.layers.{i}.<field>`).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// Qwen2's RMSNorm: `x / sqrt(mean(x²) + eps) · weight`, no bias, the mean taken in
/// f32 whatever the model's float type (Burn's `RmsNorm` does, as HF's does).
pub fn rms_norm(config: &Qwen2Config, device: &Device) -> RmsNorm {
    RmsNormConfig::new(config.hidden_size)
        .with_epsilon(config.rms_norm_eps)
        .init(device)
}

impl DecoderLayer {
    pub fn new(config: &Qwen2Config, init: &Initializer, device: &Device) -> Self {
        DecoderLayer {
            input_layernorm: rms_norm(config, device),
            self_attn: Attention::new(config, init, device),
            post_attention_layernorm: rms_norm(config, device),
            mlp: Mlp::new(config, init, device),
        }
    }

    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        mask: Option<&Tensor<4>>,
        cache: Option<&mut Option<LayerCache>>,
    ) -> Tensor<3> {
        let attended =
            self.self_attn
                .forward(self.input_layernorm.forward(x.clone()), rope, mask, cache);
        let x = x + attended;
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + mlp
    }
}
