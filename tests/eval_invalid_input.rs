#![cfg(feature = "cli")]
//! `eval` with one bad per-row input (docs/MATH.md#bad-input), as the issue tried it: a
//! 3 × 5 batch, V = 41, `--kl-loss-type low_var_kl --kl-coef 0.1 --rollout-is token`,
//! one bad value on one masked-in row. Every mode, every input and value, and the
//! options that read it: an error naming the tensor and the row, never a loss. The same
//! junk on a masked-out row changes no byte of the output.

mod common;

use std::path::{Path, PathBuf};

use common::eval;

use safetensors::tensor::{Dtype, TensorView};

const B: usize = 3;
const S: usize = 5;
const V: usize = 41;
/// Masked in (sequence 2, whose first masked-in row is 11); row 7 is masked out.
const BAD_ROW: usize = 12;
const MASKED_OUT: usize = 7;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The batch's tensors, by name, as f32 (targets apart).
struct Batch {
    logits: Vec<f32>,
    targets: Vec<i64>,
    f32s: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
}

impl Batch {
    fn new(per_token_adv: bool) -> Self {
        let n = B * S;
        let logits = (0..n * V)
            .map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0)
            .collect();
        // sequence 1 and row 10 masked out, row 1 weighs 0.5
        let mask: Vec<f32> = (0..n)
            .map(|r| match r {
                1 => 0.5,
                5..=10 => 0.0,
                _ => 1.0,
            })
            .collect();
        let targets = (0..n).map(|r| (r * 7 % V) as i64).collect();
        let old: Vec<f32> = (0..n).map(|r| -3.5 + 0.1 * r as f32).collect();
        let refp = old.iter().map(|o| o + 0.2).collect();
        let roll = old.iter().map(|o| o - 0.3).collect();
        let adv = match per_token_adv {
            true => (
                vec![B, S],
                (0..n).map(|r| (r as f32 * 0.37).sin()).collect(),
            ),
            false => (vec![B], vec![1.0, -0.5, 0.8]),
        };
        Batch {
            logits,
            targets,
            f32s: vec![
                ("mask", vec![B, S], mask),
                ("advantages", adv.0, adv.1),
                ("old_logprobs", vec![B, S], old),
                ("ref_logprobs", vec![B, S], refp),
                ("rollout_logprobs", vec![B, S], roll),
            ],
        }
    }

    /// `value` into `tensor` at `row` (its sequence for [B] advantages).
    fn with(mut self, tensor: &str, row: usize, value: f32) -> Self {
        let (_, shape, v) = self.f32s.iter_mut().find(|t| t.0 == tensor).unwrap();
        let at = if shape.len() == 1 { row / S } else { row };
        v[at] = value;
        self
    }

    fn write(&self, path: &Path) {
        let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
        let mut owned = vec![
            (
                "logits".to_string(),
                Dtype::F32,
                vec![B, S, V],
                bytes(&self.logits),
            ),
            (
                "targets".to_string(),
                Dtype::I64,
                vec![B, S],
                bytemuck::cast_slice(&self.targets).to_vec(),
            ),
        ];
        for (name, shape, v) in &self.f32s {
            owned.push((name.to_string(), Dtype::F32, shape.clone(), bytes(v)));
        }
        let views: Vec<(String, TensorView<'_>)> = owned
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::tensor::serialize_to_file(views, None, path).unwrap();
    }
}

const MODES: [&str; 8] = [
    "reinforce",
    "ppo_clip",
    "gspo",
    "cispo",
    "sapo",
    "gpg",
    "clip_cov",
    "kl_cov",
];

/// The flags for `mode`, then the options that read `tensor`: (KL estimator,
/// rollout level, rollout mode, aggregation).
fn flag_sets(mode: &'static str, tensor: &str) -> Vec<Vec<&'static str>> {
    let flags = |(kl, level, rmode, agg)| {
        vec![
            "--mode",
            mode,
            "--kl-loss-type",
            kl,
            "--kl-coef",
            "0.1",
            "--rollout-is",
            level,
            "--rollout-is-mode",
            rmode,
            "--loss-agg-mode",
            agg,
        ]
    };
    let base = ("low_var_kl", "token", "truncate", "token-mean");
    let mut options = vec![base];
    match tensor {
        "ref_logprobs" => {
            options.extend(["k1", "k2"].map(|kl| (kl, "token", "truncate", "token-mean")))
        }
        "rollout_logprobs" => {
            for level in ["token", "sequence", "geometric"] {
                for rmode in ["truncate", "mask"] {
                    options.push(("low_var_kl", level, rmode, "token-mean"));
                }
            }
            options.remove(1);
        }
        "mask" | "advantages" => {
            options.push(("low_var_kl", "token", "truncate", "seq-mean-token-mean"))
        }
        _ => {}
    }
    options.into_iter().map(flags).collect()
}

#[test]
fn eval_names_the_tensor_and_the_row() {
    let tensors = [
        "mask",
        "advantages",
        "old_logprobs",
        "ref_logprobs",
        "rollout_logprobs",
    ];
    for per_token in [false, true] {
        for tensor in tensors {
            if per_token && tensor != "advantages" {
                continue;
            }
            // a [B] advantage is named at its sequence's first masked-in row
            let row = if tensor == "advantages" && !per_token {
                11
            } else {
                BAD_ROW
            };
            let mut values = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
            if tensor == "mask" {
                values.push(-1.0);
            }
            for value in values {
                let input = tmp(&format!("bad_{tensor}_{per_token}.safetensors"));
                Batch::new(per_token)
                    .with(tensor, BAD_ROW, value)
                    .write(&input);
                for mode in MODES {
                    for flags in flag_sets(mode, tensor) {
                        let out = eval(&input, &tmp("never.safetensors"), &flags);
                        let err = String::from_utf8_lossy(&out.stderr);
                        let what = format!("{tensor} = {value} {flags:?}");
                        assert!(!out.status.success(), "{what}: accepted");
                        assert!(!err.contains("panicked"), "{what}: {err}");
                        assert!(
                            err.contains(&format!("`{tensor}`"))
                                && err.contains(&format!("row {row} ")),
                            "{what}: {err}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn eval_ignores_junk_on_masked_out_rows() {
    for per_token in [false, true] {
        let clean = tmp(&format!("clean_{per_token}.safetensors"));
        Batch::new(per_token).write(&clean);
        for mode in ["ppo_clip", "gspo", "kl_cov"] {
            let flags = &flag_sets(mode, "")[0];
            let want_path = tmp(&format!("clean_{mode}_{per_token}_out.safetensors"));
            let out = eval(&clean, &want_path, flags);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let want = std::fs::read(&want_path).unwrap();
            for tensor in [
                "advantages",
                "old_logprobs",
                "ref_logprobs",
                "rollout_logprobs",
            ] {
                for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let input = tmp("junk.safetensors");
                    Batch::new(per_token)
                        .with(tensor, MASKED_OUT, value)
                        .write(&input);
                    let got_path = tmp("junk_out.safetensors");
                    let out = eval(&input, &got_path, flags);
                    let what = format!("{mode} {tensor} = {value} masked out");
                    assert!(
                        out.status.success(),
                        "{what}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert!(
                        std::fs::read(&got_path).unwrap() == want,
                        "{what}: other bytes"
                    );
                }
            }
        }
    }
}
