//! The SwiGLU feed-forward block.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{activation, Device, Tensor};

use super::config::Qwen2Config;

/// `down(silu(gate(x)) · up(x))`, no biases.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn new(config: &Qwen2Config, init: &Initializer, device: &Device) -> Self {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let linear = |d_in, d_out| {
            LinearConfig::new(d_in, d_out)
                .with_bias(false)
                .with_initializer(init.clone())
                .init(device)
        };
        Mlp {
            gate_proj: linear(h, i),
            up_proj: linear(h, i),
            down_proj: linear(i, h),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = activation::silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
