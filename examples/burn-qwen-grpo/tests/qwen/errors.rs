//! A bad checkpoint is an error naming what is wrong with it, never a panic.

use std::path::Path;

use burn_qwen_grpo::{load, Error, HfTensor, StoreDtype};

use crate::common::{device, scratch, write_checkpoint, Shape};

/// The error of loading the tiny checkpoint after `edit`.
fn load_error(name: &str, shape: Shape, edit: impl FnOnce(&mut Vec<HfTensor>)) -> Error {
    let dir = scratch(name);
    let mut tensors = shape.random_tensors(31);
    edit(&mut tensors);
    write_checkpoint(&dir, &shape, &tensors, StoreDtype::F32);
    load_dir(&dir)
}

fn load_dir(dir: &Path) -> Error {
    match load(dir, &device()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => {
            eprintln!("{e}");
            e
        }
    }
}

fn tensor<'a>(tensors: &'a mut [HfTensor], name: &str) -> &'a mut HfTensor {
    tensors
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} not written"))
}

#[test]
fn a_missing_tensor_is_named() {
    let gone = "model.layers.1.mlp.up_proj.weight";
    let e = load_error("missing", Shape::tiny(true, 1e4), |t| {
        t.retain(|t| t.name != gone)
    });
    assert!(
        matches!(&e, Error::Missing { name, .. } if name == gone),
        "{e:?}"
    );
    assert!(e.to_string().contains(gone), "{e}");
}

#[test]
fn an_untied_checkpoint_without_its_head_is_refused() {
    let e = load_error("no-head", Shape::tiny(false, 1e4), |t| {
        t.retain(|t| t.name != "lm_head.weight")
    });
    assert!(
        matches!(&e, Error::Missing { name, .. } if name == "lm_head.weight"),
        "{e:?}"
    );
}

/// A projection stored `[in, out]` (Burn's `Linear` layout, not HF's): the same
/// number of elements, the wrong shape.
#[test]
fn a_transposed_weight_is_named_with_both_shapes() {
    let name = "model.layers.0.self_attn.k_proj.weight";
    let e = load_error("transposed", Shape::tiny(true, 1e4), |t| {
        tensor(t, name).shape.reverse()
    });
    match &e {
        Error::Shape {
            name: n,
            got,
            expected,
        } => {
            assert_eq!(n, name);
            assert_eq!(
                (got.as_slice(), expected.as_slice()),
                (&[32, 16][..], &[16, 32][..])
            );
        }
        _ => panic!("{e:?}"),
    }
    assert!(e.to_string().contains(name), "{e}");
}

#[test]
fn a_short_bias_is_named() {
    let name = "model.layers.1.self_attn.q_proj.bias";
    let e = load_error("short-bias", Shape::tiny(true, 1e4), |t| {
        let b = tensor(t, name);
        b.values.pop();
        b.shape = vec![31];
    });
    assert!(
        matches!(&e, Error::Shape { name: n, .. } if n == name),
        "{e:?}"
    );
}

#[test]
fn a_non_finite_weight_is_named() {
    let name = "model.layers.0.mlp.down_proj.weight";
    let e = load_error("nan", Shape::tiny(true, 1e4), |t| {
        tensor(t, name).values[5] = f32::NAN
    });
    assert!(
        matches!(&e, Error::Tensor { name: n, .. } if n == name),
        "{e:?}"
    );
    assert!(e.to_string().contains("element 5"), "{e}");
}

/// An integer tensor where a weight should be: written with `safetensors` directly,
/// since the crate's writer only writes floats.
#[test]
fn an_integer_weight_is_named() {
    let shape = Shape::tiny(true, 1e4);
    let dir = scratch("int-weight");
    std::fs::write(dir.join("config.json"), shape.config_json()).unwrap();
    let tensors = shape.random_tensors(32);
    let int = |t: &HfTensor| t.name == "model.norm.weight";
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| {
            if int(t) {
                t.values
                    .iter()
                    .flat_map(|&v| (v as i32).to_le_bytes())
                    .collect()
            } else {
                t.values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        })
        .collect();
    let views = tensors.iter().zip(&bytes).map(|(t, b)| {
        let dtype = if int(t) {
            safetensors::Dtype::I32
        } else {
            safetensors::Dtype::F32
        };
        let view = safetensors::tensor::TensorView::new(dtype, t.shape.clone(), b).unwrap();
        (t.name.clone(), view)
    });
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let e = load_dir(&dir);
    assert!(
        matches!(&e, Error::Dtype { name, dtype } if name == "model.norm.weight" && dtype == "I32"),
        "{e:?}"
    );
}

#[test]
fn a_file_that_is_not_safetensors_is_named() {
    let shape = Shape::tiny(true, 1e4);
    let dir = scratch("not-safetensors");
    std::fs::write(dir.join("config.json"), shape.config_json()).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"not a checkpoint").unwrap();
    let e = load_dir(&dir);
    assert!(
        matches!(&e, Error::File { path, .. } if path.ends_with("model.safetensors")),
        "{e:?}"
    );
}

#[test]
fn a_missing_config_is_named() {
    let dir = scratch("no-config");
    let e = load_dir(&dir);
    assert!(
        matches!(&e, Error::Io { path, .. } if path.ends_with("config.json")),
        "{e:?}"
    );
}

/// Configurations the model does not implement: refused, the field named.
#[test]
fn an_unsupported_config_is_refused() {
    let shape = Shape::tiny(true, 1e4);
    let cases = [
        (
            "\"num_key_value_heads\": 2",
            "\"num_key_value_heads\": 3",
            "num_key_value_heads",
        ),
        (
            "\"model_type\": \"qwen2\"",
            "\"model_type\": \"llama\"",
            "model_type",
        ),
        (
            "\"rope_scaling\": null",
            "\"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0}",
            "rope_scaling",
        ),
        (
            "\"use_sliding_window\": false",
            "\"use_sliding_window\": true",
            "use_sliding_window",
        ),
        ("\"hidden_size\": 32,", "", "hidden_size"),
    ];
    for (i, (from, to, field)) in cases.into_iter().enumerate() {
        let dir = scratch(&format!("config-{i}"));
        let json = shape.config_json();
        assert!(json.contains(from), "{from}");
        std::fs::write(dir.join("config.json"), json.replace(from, to)).unwrap();
        let e = load_dir(&dir);
        assert!(
            matches!(&e, Error::File { path, .. } if path.ends_with("config.json")),
            "{e:?}"
        );
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
}
