//! The tests' device, scratch directories and random checkpoints. The checkpoints are
//! spelled here in HF's names and layouts, independently of the crate's loader.

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_qwen_grpo::{write_tensors, HfTensor, StoreDtype};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A Burn device on every adapter that opens one, with its name: the model's tests
/// run on each. None fails the tests rather than skipping them; an adapter that
/// refuses a device is reported.
pub fn devices() -> &'static [(String, Device)] {
    static DEVICES: OnceLock<Vec<(String, Device)>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let instance = wgpu_policy_loss::instance();
        let mut out = Vec::new();
        for adapter in
            pollster::block_on(instance.enumerate_adapters(wgpu_policy_loss::wgpu::Backends::all()))
        {
            let name = wgpu_policy_loss::describe_info(&adapter.get_info());
            match wgpu_policy_loss_burn::from_adapter(&instance, &adapter) {
                Ok(d) => out.push((name, d)),
                Err(e) => eprintln!("SKIPPED adapter {name}: {e}"),
            }
        }
        assert!(!out.is_empty(), "no GPU adapter opened a Burn device");
        out
    })
}

/// The first of [`devices`], for the checks that run on the host (the loader's errors).
pub fn device() -> Device {
    devices()[0].1.clone()
}

/// An empty scratch directory of this name under Cargo's per-target tmp directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("burn-qwen-grpo-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The shape of a test checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub vocab: usize,
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub eps: f64,
    pub theta: f64,
    pub tied: bool,
}

impl Shape {
    /// V = 97, H = 32, 2 layers, 4 heads over 2 key/value heads (head dim 8),
    /// intermediate 48.
    pub fn tiny(tied: bool, theta: f64) -> Shape {
        Shape {
            vocab: 97,
            hidden: 32,
            inter: 48,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            eps: 1e-6,
            theta,
            tied,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// `config.json` as HF writes one for Qwen2.5, fields the model ignores included.
    pub fn config_json(&self) -> String {
        format!(
            r#"{{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "hidden_act": "silu",
  "hidden_size": {h},
  "initializer_range": 0.02,
  "intermediate_size": {i},
  "max_position_embeddings": 64,
  "max_window_layers": {l},
  "model_type": "qwen2",
  "num_attention_heads": {nh},
  "num_hidden_layers": {l},
  "num_key_value_heads": {kv},
  "rms_norm_eps": {eps:e},
  "rope_scaling": null,
  "rope_theta": {theta:?},
  "sliding_window": 64,
  "tie_word_embeddings": {tied},
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": {v}
}}"#,
            h = self.hidden,
            i = self.inter,
            l = self.layers,
            nh = self.heads,
            kv = self.kv_heads,
            eps = self.eps,
            theta = self.theta,
            tied = self.tied,
            v = self.vocab,
        )
    }

    /// Random weights in HF's names and `[out, in]` layouts, at scales that keep every
    /// part of the computation away from its trivial regime: unit-variance
    /// projections, biases of ±0.5 (Qwen2's key biases are large), norm weights in
    /// 0.6..1.4, embeddings in ±1, so that the logits are a few units and the
    /// attention is neither uniform nor one-hot.
    pub fn random_tensors(&self, seed: u64) -> Vec<HfTensor> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (v, h, i, d) = (self.vocab, self.hidden, self.inter, self.head_dim());
        let (q, kv) = (self.heads * d, self.kv_heads * d);
        let mut out = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, lo: f32, hi: f32| {
            let n = shape.iter().product();
            let values = (0..n).map(|_| rng.random_range(lo..hi)).collect();
            out.push(HfTensor {
                name,
                shape,
                values,
            });
        };
        // U(±a) has variance a²/3: a = √(3/fan_in) gives unit-variance outputs
        let w = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
        add("model.embed_tokens.weight".into(), vec![v, h], -1.0, 1.0);
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            add(format!("{p}.input_layernorm.weight"), vec![h], 0.6, 1.4);
            for (n, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
                add(
                    format!("{p}.self_attn.{n}.weight"),
                    vec![rows, h],
                    -w(h),
                    w(h),
                );
                add(format!("{p}.self_attn.{n}.bias"), vec![rows], -0.5, 0.5);
            }
            add(
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, q],
                -w(q),
                w(q),
            );
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                0.6,
                1.4,
            );
            add(format!("{p}.mlp.gate_proj.weight"), vec![i, h], -w(h), w(h));
            add(format!("{p}.mlp.up_proj.weight"), vec![i, h], -w(h), w(h));
            add(format!("{p}.mlp.down_proj.weight"), vec![h, i], -w(i), w(i));
        }
        add("model.norm.weight".into(), vec![h], 0.6, 1.4);
        if !self.tied {
            add("lm_head.weight".into(), vec![v, h], -1.0, 1.0);
        }
        out
    }
}

/// Writes `tensors` and `shape`'s `config.json` to `dir`.
pub fn write_checkpoint(
    dir: &std::path::Path,
    shape: &Shape,
    tensors: &[HfTensor],
    dtype: StoreDtype,
) {
    std::fs::write(dir.join("config.json"), shape.config_json()).expect("config.json");
    write_tensors(&dir.join("model.safetensors"), tensors, dtype).expect("model.safetensors");
}

/// `b` random sequences of `s` tokens below `vocab`.
pub fn random_tokens(seed: u64, b: usize, s: usize, vocab: usize) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..b)
        .map(|_| (0..s).map(|_| rng.random_range(0..vocab)).collect())
        .collect()
}

/// `tokens` (sequences of one length) as a `[B, S]` tensor.
pub fn token_tensor(tokens: &[Vec<usize>], device: &Device) -> Tensor<2, Int> {
    let (b, s) = (tokens.len(), tokens[0].len());
    let ids: Vec<i32> = tokens.iter().flatten().map(|&t| t as i32).collect();
    Tensor::from_data(TensorData::new(ids, [b, s]), device)
}

/// A tensor's values on the host.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().expect("read back")
}

/// The largest `|got − want|`, NaN if any element is NaN (so that it fails every
/// bound).
pub fn max_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths");
    got.iter().zip(want).fold(0f64, |m, (&g, &w)| {
        let e = (g as f64 - w).abs();
        if e.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(e)
        }
    })
}

pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0f64, |m, x| m.max(x.abs()))
}
