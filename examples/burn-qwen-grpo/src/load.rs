//! Reading a Hugging Face Qwen2 checkpoint: `config.json` and the safetensors weights
//! beside it (`model.safetensors`, or the shards `model.safetensors.index.json` lists).
//!
//! Every tensor is checked against the configuration's shape and converted to f32 on
//! the host, then to the device's float type: BF16 and F16 widen exactly, so a
//! checkpoint's values reach an f32 model unchanged. A missing tensor, a wrong shape, an
//! unreadable dtype or a non-finite value is an [`Error`] naming the tensor. A tied
//! checkpoint that stores an `lm_head.weight` anyway has it ignored, as HF does when
//! it ties the head to the embedding after loading.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::{Device, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::Value;

use crate::hf::{self, Slot, SlotParam};
use crate::model::{Qwen2, Qwen2Config};
use crate::Error;

/// The model in `dir` on `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Qwen2, Error> {
    let config = read_config(dir)?;
    let mut model = Qwen2::new(&config, device)?;
    let files = weight_files(dir)?;
    let bytes = files
        .iter()
        .map(|p| fs::read(p).map_err(|e| io(p, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let shards = files
        .iter()
        .zip(&bytes)
        .map(|(p, b)| {
            SafeTensors::deserialize(b).map_err(|e| Error::File {
                path: p.clone(),
                reason: format!("not a safetensors file: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for slot in hf::slots(&mut model) {
        let view = find(&shards, &slot.name, dir)?;
        fill(slot, &view, device)?;
    }
    Ok(model)
}

/// The configuration in `dir/config.json`, checked: HF fields that would change the
/// computation (another `model_type`, activation, rope scaling, sliding window, head
/// dimension) are refused rather than ignored.
pub fn read_config(dir: &Path) -> Result<Qwen2Config, Error> {
    let path = dir.join(hf::CONFIG);
    let bad = |reason: String| Error::File {
        path: path.clone(),
        reason,
    };
    let text = fs::read(&path).map_err(|e| io(&path, e))?;
    let json: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    unsupported(&json).map_err(bad)?;
    let config: Qwen2Config = serde_json::from_value(json.clone())
        .map_err(|e| bad(format!("not a Qwen2 configuration: {e}")))?;
    config.validate().map_err(bad)?;
    if let Some(d) = json.get("head_dim").and_then(Value::as_u64) {
        if d as usize != config.head_dim() {
            return Err(bad(format!(
                "head_dim {d} is not hidden_size / num_attention_heads = {}",
                config.head_dim()
            )));
        }
    }
    Ok(config)
}

/// The HF options this model does not implement, where the file sets them.
fn unsupported(json: &Value) -> Result<(), String> {
    let field = |name: &str| json.get(name).filter(|v| !v.is_null());
    if let Some(t) = field("model_type").and_then(Value::as_str) {
        if t != "qwen2" {
            return Err(format!("model_type is `{t}`, not `qwen2`"));
        }
    }
    if let Some(a) = field("hidden_act").and_then(Value::as_str) {
        if a != "silu" {
            return Err(format!(
                "hidden_act is `{a}`; the model's MLP is SwiGLU (silu)"
            ));
        }
    }
    if field("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err("use_sliding_window is true; the model attends to every position".into());
    }
    if let Some(s) = field("rope_scaling") {
        return Err(format!(
            "rope_scaling is {s}; the model's rotary embedding is unscaled"
        ));
    }
    Ok(())
}

/// The weight files: the shards the index names, else `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let index = dir.join(hf::INDEX);
    if !index.exists() {
        return Ok(vec![dir.join(hf::WEIGHTS)]);
    }
    let text = fs::read(&index).map_err(|e| io(&index, e))?;
    let bad = |reason: &str| Error::File {
        path: index.clone(),
        reason: reason.into(),
    };
    let json: Value = serde_json::from_slice(&text).map_err(|_| bad("not JSON"))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no weight_map object"))?;
    let names = map
        .values()
        .map(|f| {
            f.as_str()
                .ok_or_else(|| bad("a weight_map value is not a file name"))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(names.into_iter().map(|f| dir.join(f)).collect())
}

fn find<'a>(shards: &[SafeTensors<'a>], name: &str, dir: &Path) -> Result<TensorView<'a>, Error> {
    for shard in shards {
        match shard.tensor(name) {
            Ok(view) => return Ok(view),
            Err(SafeTensorError::TensorNotFound(_)) => {}
            Err(e) => {
                return Err(Error::Tensor {
                    name: name.into(),
                    reason: e.to_string(),
                })
            }
        }
    }
    Err(Error::Missing {
        name: name.into(),
        dir: dir.to_path_buf(),
    })
}

/// Checks `view` against `slot`'s shape and puts its values in the model.
fn fill(slot: Slot<'_>, view: &TensorView<'_>, device: &Device) -> Result<(), Error> {
    let expected = slot.hf_shape();
    if view.shape() != expected.as_slice() {
        return Err(Error::Shape {
            name: slot.name,
            got: view.shape().to_vec(),
            expected,
        });
    }
    let values = to_f32(&slot.name, view)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Tensor {
            name: slot.name,
            reason: format!("element {i} is {}", values[i]),
        });
    }
    match slot.param {
        SlotParam::Matrix(p) => *p = Param::from_data(TensorData::new(values, expected), device),
        SlotParam::Linear(p) => {
            let (out, inp) = (expected[0], expected[1]);
            let t = hf::transpose(&values, out, inp);
            *p = Param::from_data(TensorData::new(t, [inp, out]), device);
        }
        SlotParam::Vector(p) => *p = Param::from_data(TensorData::new(values, expected), device),
    }
    Ok(())
}

/// The values of `view` as f32 (little-endian, as safetensors stores them; the bytes
/// need not be aligned for their type).
fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, Error> {
    let b = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        // narrowing an f64 checkpoint rounds once, as a cast of the tensor would
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::Dtype {
                name: name.into(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
