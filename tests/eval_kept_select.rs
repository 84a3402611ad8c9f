#![cfg(feature = "cli")]
//! `eval` with kept sets computed in the kernels (docs/MATH.md#the-eval-command:
//! `--top-k`, `--top-p`, `--min-p`): the loss from logits and from hidden + lm_head,
//! and the log-prob primitive, against the f64 reference; `--parts` with the same
//! bits; a target outside its set and `--vocab-shards` errors naming their tensor or
//! flag.

mod common;

use std::path::PathBuf;

use common::primitive::primitive_ref_with;
use common::{eval_fails_naming, eval_ok, pod_bytes, tensor_f32s, tmp_path};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgpu_policy_loss::reference::sampler::{Sampler, SamplerBatch};
use wgpu_policy_loss::reference::{compare, policy_loss_sampled, Batch};
use wgpu_policy_loss::LossConfig;

const B: usize = 3;
const S: usize = 4;
const V: usize = 29;
const MASKED: usize = 5;

/// Row r's logits: a permutation of 0..29 over 7, shifted by the row (no two within a
/// row closer than 1/7); each row's target its largest (kept by every rule).
fn logits() -> Vec<f32> {
    (0..B * S * V)
        .map(|i| {
            let (r, v) = (i / V, i % V);
            ((r * 31 + v * 17) % V) as f32 / 7.0 - 2.0 + 0.1 * r as f32
        })
        .collect()
}

fn argmax(x: &[f32], r: usize) -> i64 {
    let row = &x[r * V..(r + 1) * V];
    (0..V).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as i64
}

/// The input: logits (or hidden and an identity lm_head, whose product is the same
/// logits exactly), targets, and the loss's tensors or the primitive's upstream ones.
fn input(name: &str, targets: &[i64], head: bool, primitive: bool) -> PathBuf {
    let path = tmp_path("select", name);
    let x = logits();
    let mut owned = vec![("targets", Dtype::I64, vec![B, S], pod_bytes(targets))];
    if head {
        let eye: Vec<f32> = (0..V * V).map(|i| (i / V == i % V) as u32 as f32).collect();
        owned.push(("hidden", Dtype::F32, vec![B, S, V], pod_bytes(&x)));
        owned.push(("lm_head", Dtype::F32, vec![V, V], pod_bytes(&eye)));
    } else {
        owned.push(("logits", Dtype::F32, vec![B, S, V], pod_bytes(&x)));
    }
    let (a, c) = upstream();
    if primitive {
        owned.push(("upstream_logprobs", Dtype::F32, vec![B, S], pod_bytes(&a)));
        owned.push(("upstream_lse", Dtype::F32, vec![B, S], pod_bytes(&c)));
    } else {
        owned.push(("mask", Dtype::F32, vec![B, S], pod_bytes(&mask())));
        owned.push((
            "advantages",
            Dtype::F32,
            vec![B],
            pod_bytes(&[1.0f32, -0.5, 0.8]),
        ));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
    path
}

fn mask() -> Vec<f32> {
    (0..B * S).map(|r| (r != MASKED) as u32 as f32).collect()
}

fn upstream() -> (Vec<f32>, Vec<f32>) {
    let m = mask();
    let a = (0..B * S).map(|r| m[r] * (0.5 - 0.1 * r as f32)).collect();
    let c = (0..B * S).map(|r| m[r] * 0.2).collect();
    (a, c)
}

fn targets() -> Vec<i64> {
    let x = logits();
    (0..B * S).map(|r| argmax(&x, r)).collect()
}

fn near(what: &str, got: f32, want: f64) {
    assert!(
        (got as f64 - want).abs() <= 1e-5 * (want.abs() + 1.0),
        "{what}: {got} vs {want}"
    );
}

/// Each flag set: its command line and the configuration it means.
fn flag_sets() -> Vec<(Vec<&'static str>, LossConfig)> {
    let d = LossConfig::default();
    vec![
        (vec!["--top-k", "4"], LossConfig { top_k: 4, ..d }),
        (
            vec!["--top-p", "0.7", "--temperature", "0.8"],
            LossConfig {
                top_p: 0.7,
                temperature: 0.8,
                ..d
            },
        ),
        (
            vec!["--min-p", "0.1", "--logit-softcap", "3"],
            LossConfig {
                min_p: 0.1,
                logit_softcap: Some(3.0),
                ..d
            },
        ),
        (
            vec!["--top-k", "6", "--top-p", "0.9", "--min-p", "0.02"],
            LossConfig {
                top_k: 6,
                top_p: 0.9,
                min_p: 0.02,
                ..d
            },
        ),
    ]
}

/// The loss from logits under each flag set against the reference, the same bits with
/// `--parts 3`, and the head's (identity lm_head) loss and log-probs.
#[test]
fn the_loss_over_computed_sets_against_the_reference() {
    let y = targets();
    let path = input("loss.safetensors", &y, false, false);
    let head = input("head.safetensors", &y, true, false);
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (x, m) = (f(&logits()), f(&mask()));
    let ids: Vec<u32> = y.iter().map(|&t| t as u32).collect();
    for (flags, cfg) in flag_sets() {
        let b = Batch {
            logits: &x,
            vocab: V,
            rows_per_seq: S,
            targets: &ids,
            mask: &m,
            advantages: &[1.0, -0.5, 0.8],
            old_logp: None,
            ref_logp: None,
        };
        let plain = SamplerBatch {
            sampler: Sampler::default(),
            temperatures: None,
            keep: None,
        };
        let want = policy_loss_sampled(&cfg, &b, None, &plain).unwrap();
        let file = eval_ok(&path, &tmp_path("select", "out.safetensors"), &flags);
        let st = SafeTensors::deserialize(&file).unwrap();
        near(
            &format!("{flags:?}: loss"),
            tensor_f32s(&st, "loss")[0],
            want.loss,
        );
        for (name, w) in [
            ("logprobs", &want.logp),
            ("entropy", &want.entropy),
            ("lse", &want.lse),
        ] {
            let g = tensor_f32s(&st, name);
            for r in (0..B * S).filter(|&r| r != MASKED) {
                near(&format!("{flags:?}: {name}[{r}]"), g[r], w[r]);
            }
        }
        compare::logits_grad(
            &tensor_f32s(&st, "grad_logits"),
            &want.grad,
            compare::Format::F32,
        )
        .unwrap_or_else(|e| panic!("{flags:?}: grad_logits {e}"));
        let mut split = flags.clone();
        split.extend(["--parts", "3"]);
        assert_eq!(
            eval_ok(&path, &tmp_path("select", "parts.safetensors"), &split),
            file,
            "{flags:?}: --parts 3"
        );
        let mut chunked = flags.clone();
        chunked.extend(["--head-chunk", "5"]);
        let st_file = eval_ok(&head, &tmp_path("select", "head-out.safetensors"), &chunked);
        let st = SafeTensors::deserialize(&st_file).unwrap();
        near(
            &format!("{chunked:?}: loss"),
            tensor_f32s(&st, "loss")[0],
            want.loss,
        );
        let lp = tensor_f32s(&st, "logprobs");
        for r in (0..B * S).filter(|&r| r != MASKED) {
            near(&format!("{chunked:?}: logprobs[{r}]"), lp[r], want.logp[r]);
        }
    }
}

/// The primitive under each flag set: its log-probs, lse and gradient against the
/// reference.
#[test]
fn the_primitive_over_computed_sets_against_the_reference() {
    let y = targets();
    let path = input("prim.safetensors", &y, false, true);
    let x: Vec<f64> = logits().iter().map(|&v| v as f64).collect();
    let ids: Vec<u32> = y.iter().map(|&t| t as u32).collect();
    let (a, c) = upstream();
    let zeros = vec![0.0f32; B * S];
    for (flags, cfg) in flag_sets() {
        let sampler = Sampler {
            softcap: cfg.logit_softcap.map(f64::from),
            top_k: cfg.top_k as i64,
            top_p: cfg.top_p as f64,
            min_p: cfg.min_p as f64,
        };
        let tau = |_: usize| cfg.temperature as f64;
        let want = primitive_ref_with(&x, V, &ids, (&tau, sampler), [&a, &zeros, &c]);
        let file = eval_ok(&path, &tmp_path("select", "prim-out.safetensors"), &flags);
        let st = SafeTensors::deserialize(&file).unwrap();
        let (lp, lse) = (tensor_f32s(&st, "logprobs"), tensor_f32s(&st, "lse"));
        for (r, row) in want.rows.iter().enumerate() {
            let Some((row, _)) = row else { continue };
            near(
                &format!("{flags:?}: logprobs[{r}]"),
                lp[r],
                row.logp(ids[r] as usize).unwrap(),
            );
            near(&format!("{flags:?}: lse[{r}]"), lse[r], row.lse);
        }
        compare::logits_grad(
            &tensor_f32s(&st, "grad_logits"),
            &want.grad,
            compare::Format::F32,
        )
        .unwrap_or_else(|e| panic!("{flags:?}: grad_logits {e}"));
    }
}

/// A read row's target outside its computed set names `targets`; `--vocab-shards` with
/// a computed rule names that rule's flag (the loss and the primitive).
#[test]
fn bad_targets_and_shards_name_their_tensor_or_flag() {
    let mut y = targets();
    let x = logits();
    // row 0's smallest logit: outside its top-4
    y[0] = (0..V).min_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap() as i64;
    let bad = input("bad.safetensors", &y, false, false);
    eval_fails_naming(&bad, &["--top-k", "4"], "targets");
    let good = input("good.safetensors", &targets(), false, false);
    let prim = input("good-prim.safetensors", &targets(), false, true);
    for (flag, value) in [("--top-k", "4"), ("--top-p", "0.5"), ("--min-p", "0.2")] {
        eval_fails_naming(&good, &[flag, value, "--vocab-shards", "2"], flag);
        eval_fails_naming(&prim, &[flag, value, "--vocab-shards", "2"], flag);
    }
}
