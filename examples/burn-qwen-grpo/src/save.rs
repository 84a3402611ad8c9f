//! Writing a checkpoint in the layout [`load`](mod@crate::load) reads and Hugging Face's
//! `transformers` loads: `config.json` and `model.safetensors`, HF's tensor names,
//! `nn.Linear` weights `[out, in]`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use burn::tensor::Tensor;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

use crate::hf::{self, Slot, SlotParam};
use crate::model::{Qwen2, Qwen2Config};
use crate::Error;

/// The dtype a checkpoint stores its weights in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    /// Round to nearest even, as `tensor.to(torch.bfloat16)` does.
    Bf16,
    F16,
}

impl StoreDtype {
    fn safetensors(self) -> Dtype {
        match self {
            StoreDtype::F32 => Dtype::F32,
            StoreDtype::Bf16 => Dtype::BF16,
            StoreDtype::F16 => Dtype::F16,
        }
    }

    /// `config.json`'s `torch_dtype`.
    fn torch(self) -> &'static str {
        match self {
            StoreDtype::F32 => "float32",
            StoreDtype::Bf16 => "bfloat16",
            StoreDtype::F16 => "float16",
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            StoreDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoreDtype::Bf16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            StoreDtype::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        }
    }
}

/// One tensor as a checkpoint stores it: its HF name, its HF shape and its values,
/// row-major.
#[derive(Clone, Debug)]
pub struct HfTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Writes `model` to `dir` (made if absent): `config.json` and `model.safetensors`,
/// the weights in `dtype`.
pub fn save(model: &Qwen2, dir: &Path, dtype: StoreDtype) -> Result<(), Error> {
    // the slots borrow the model mutably (the loader's view of it); a clone shares the
    // tensors and reads them the same
    let mut model = model.clone();
    let tensors = hf::slots(&mut model)
        .into_iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    fs::create_dir_all(dir).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    write_tensors(&dir.join(hf::WEIGHTS), &tensors, dtype)?;
    write_config(dir, model.config(), dtype)
}

/// Writes `tensors` to the safetensors file `path` in `dtype`, with the metadata
/// `{"format": "pt"}` that `transformers` checks for.
pub fn write_tensors(path: &Path, tensors: &[HfTensor], dtype: StoreDtype) -> Result<(), Error> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| dtype.encode(&t.values)).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view = TensorView::new(dtype.safetensors(), t.shape.clone(), b).map_err(|e| {
                Error::Tensor {
                    name: t.name.clone(),
                    reason: e.to_string(),
                }
            })?;
            Ok((t.name.as_str(), view))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| Error::File {
        path: path.to_path_buf(),
        reason: format!("cannot write: {e}"),
    })
}

/// Writes `dir/config.json`: `config`'s fields, and those `transformers` needs to pick
/// the architecture.
pub fn write_config(dir: &Path, config: &Qwen2Config, dtype: StoreDtype) -> Result<(), Error> {
    let path = dir.join(hf::CONFIG);
    let fields = Qwen2Config {
        num_key_value_heads: Some(config.kv_heads()),
        ..config.clone()
    };
    let mut json = serde_json::to_value(&fields).map_err(|e| Error::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let extra = [
        ("architectures", json!(["Qwen2ForCausalLM"])),
        ("model_type", json!("qwen2")),
        ("hidden_act", json!("silu")),
        ("use_sliding_window", json!(false)),
        ("rope_scaling", Value::Null),
        ("torch_dtype", json!(dtype.torch())),
    ];
    if let Some(map) = json.as_object_mut() {
        map.extend(extra.map(|(k, v)| (k.to_string(), v)));
    }
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::File {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    fs::write(&path, text).map_err(|e| Error::Io { path, source: e })
}

/// A parameter's values in the checkpoint's layout.
fn read(slot: Slot<'_>) -> Result<HfTensor, Error> {
    let shape = slot.hf_shape();
    let values = match slot.param {
        SlotParam::Matrix(p) => host_values(&slot.name, p.val())?,
        SlotParam::Linear(p) => {
            // held [in, out]: the checkpoint's [out, in] transposed
            let (out, inp) = (shape[0], shape[1]);
            hf::transpose(&host_values(&slot.name, p.val())?, inp, out)
        }
        SlotParam::Vector(p) => host_values(&slot.name, p.val())?,
    };
    Ok(HfTensor {
        name: slot.name,
        shape,
        values,
    })
}

fn host_values<const D: usize>(name: &str, t: Tensor<D>) -> Result<Vec<f32>, Error> {
    t.try_into_vec_as::<f32>().map_err(|e| Error::Tensor {
        name: name.into(),
        reason: format!("cannot be read back: {e}"),
    })
}
