//! Hugging Face's files, names and layouts of a Qwen2 checkpoint, shared by the loader
//! and the writer.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::model::Qwen2;

/// The configuration, beside the weights.
pub(crate) const CONFIG: &str = "config.json";
/// The weights of an unsharded checkpoint (Qwen2.5-0.5B's).
pub(crate) const WEIGHTS: &str = "model.safetensors";
/// The index of a sharded checkpoint: `weight_map` from tensor name to shard file.
pub(crate) const INDEX: &str = "model.safetensors.index.json";

/// A parameter of the model, by its checkpoint name.
pub(crate) struct Slot<'a> {
    pub name: String,
    pub param: SlotParam<'a>,
}

pub(crate) enum SlotParam<'a> {
    /// Held as the checkpoint holds it (the embedding, the lm-head: `[V, H]`).
    Matrix(&'a mut Param<Tensor<2>>),
    /// A Burn `Linear` weight, `[in, out]`: the checkpoint's `nn.Linear` weight
    /// `[out, in]`, transposed.
    Linear(&'a mut Param<Tensor<2>>),
    Vector(&'a mut Param<Tensor<1>>),
}

impl Slot<'_> {
    /// The tensor's shape in the checkpoint, from the model's own (read without making
    /// a lazily initialised parameter).
    pub fn hf_shape(&self) -> Vec<usize> {
        match &self.param {
            SlotParam::Matrix(p) => p.lazy_shape().to_vec(),
            SlotParam::Linear(p) => p.lazy_shape().to_vec().into_iter().rev().collect(),
            SlotParam::Vector(p) => p.lazy_shape().to_vec(),
        }
    }
}

/// Every parameter of `model` with its checkpoint name, in the checkpoint's order. The
/// lm-head appears only when untied: a tied checkpoint has no `lm_head.weight` (HF
/// writes none), and the embedding serves.
pub(crate) fn slots(model: &mut Qwen2) -> Vec<Slot<'_>> {
    let mut out = vec![Slot {
        name: "model.embed_tokens.weight".into(),
        param: SlotParam::Matrix(&mut model.embed_tokens.weight),
    }];
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        out.push(vector(
            format!("{p}.input_layernorm.weight"),
            &mut layer.input_layernorm.gamma,
        ));
        let a = &mut layer.self_attn;
        for (n, l) in [
            ("q_proj", &mut a.q_proj),
            ("k_proj", &mut a.k_proj),
            ("v_proj", &mut a.v_proj),
            ("o_proj", &mut a.o_proj),
        ] {
            linear(&mut out, format!("{p}.self_attn.{n}"), l);
        }
        out.push(vector(
            format!("{p}.post_attention_layernorm.weight"),
            &mut layer.post_attention_layernorm.gamma,
        ));
        let m = &mut layer.mlp;
        for (n, l) in [
            ("gate_proj", &mut m.gate_proj),
            ("up_proj", &mut m.up_proj),
            ("down_proj", &mut m.down_proj),
        ] {
            linear(&mut out, format!("{p}.mlp.{n}"), l);
        }
    }
    out.push(vector("model.norm.weight".into(), &mut model.norm.gamma));
    if let Some(w) = &mut model.lm_head {
        out.push(Slot {
            name: "lm_head.weight".into(),
            param: SlotParam::Matrix(w),
        });
    }
    out
}

fn vector(name: String, param: &mut Param<Tensor<1>>) -> Slot<'_> {
    Slot {
        name,
        param: SlotParam::Vector(param),
    }
}

/// `{prefix}.weight`, and `{prefix}.bias` where the layer has one.
fn linear<'a>(out: &mut Vec<Slot<'a>>, prefix: String, l: &'a mut Linear) {
    out.push(Slot {
        name: format!("{prefix}.weight"),
        param: SlotParam::Linear(&mut l.weight),
    });
    if let Some(b) = &mut l.bias {
        out.push(vector(format!("{prefix}.bias"), b));
    }
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}
