#![cfg(feature = "cli")]
//! `eval` with the sampler's given kept sets (docs/MATH.md#the-eval-command: the
//! `keep_offsets` / `keep_ids` tensors, I32 or I64): the loss from logits and from
//! hidden + lm_head, and the log-prob primitive, against the f64 reference; `--parts`
//! with the same bits; each bad input an error naming its tensor or flag.

mod common;

use std::path::PathBuf;

use common::{eval_fails_naming, eval_ok, pod_bytes, tensor_f32s, tmp_path};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgpu_policy_loss::reference::sampler::{KeptSets, Sampler, SamplerBatch};
use wgpu_policy_loss::reference::{compare, head_logits, policy_loss_sampled, Batch};
use wgpu_policy_loss::LossConfig;

const B: usize = 3;
const S: usize = 4;
const V: usize = 13;
const H: usize = 5;
const MASKED: usize = 5;

struct Data {
    hidden: Vec<f32>,
    lm_head: Vec<f32>,
    logits: Vec<f32>,
    targets: Vec<i64>,
    mask: Vec<f32>,
    adv: Vec<f32>,
    offsets: Vec<i64>,
    ids: Vec<i64>,
}

/// A 3 × 4 batch, V = 13: row 5 masked out (its target outside its set, never read),
/// row 2 keeping every token (an empty range), row 9 its target alone, the others five
/// ids with the target among them.
fn data() -> Data {
    let n = B * S;
    let hidden: Vec<f32> = (0..n * H)
        .map(|i| ((i * 29 % 31) as f32 / 12.0) - 1.2)
        .collect();
    let lm_head: Vec<f32> = (0..V * H)
        .map(|i| ((i * 17 % 23) as f32 / 9.0) - 1.1)
        .collect();
    let x64 = head_logits(
        &hidden.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &lm_head.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        H,
    );
    let targets: Vec<i64> = (0..n).map(|r| (r * 7 % V) as i64).collect();
    let (mut offsets, mut ids) = (vec![0i64], Vec::new());
    for (r, &y) in targets.iter().enumerate() {
        match r {
            2 => {}
            9 => ids.push(y),
            MASKED => ids.extend((0..5).map(|k| (y + 1 + k) % V as i64)),
            _ => ids.extend((0..5).map(|k| (y + 3 * k) % V as i64).rev()),
        }
        offsets.push(ids.len() as i64);
    }
    Data {
        logits: x64.iter().map(|&v| v as f32).collect(),
        hidden,
        lm_head,
        targets,
        mask: (0..n)
            .map(|r| if r == MASKED { 0.0 } else { 1.0 })
            .collect(),
        adv: vec![1.0, -0.5, 0.8],
        offsets,
        ids,
    }
}

/// The input file: logits (or hidden and lm_head), the loss's tensors (or the
/// primitive's upstream ones), and the kept sets as `ints` (I64 or I32).
fn input(name: &str, d: &Data, head: bool, primitive: bool, ints: Dtype) -> PathBuf {
    let path = tmp_path("kept", name);
    let n = B * S;
    let mut owned = vec![("targets", Dtype::I64, vec![B, S], pod_bytes(&d.targets))];
    if head {
        owned.push(("hidden", Dtype::F32, vec![B, S, H], pod_bytes(&d.hidden)));
        owned.push(("lm_head", Dtype::F32, vec![V, H], pod_bytes(&d.lm_head)));
    } else {
        owned.push(("logits", Dtype::F32, vec![B, S, V], pod_bytes(&d.logits)));
    }
    if primitive {
        let a: Vec<f32> = (0..n)
            .map(|r| {
                if r == MASKED {
                    0.0
                } else {
                    0.5 - 0.1 * r as f32
                }
            })
            .collect();
        let c: Vec<f32> = (0..n)
            .map(|r| if r == MASKED { 0.0 } else { 0.2 })
            .collect();
        owned.push(("upstream_logprobs", Dtype::F32, vec![B, S], pod_bytes(&a)));
        owned.push(("upstream_lse", Dtype::F32, vec![B, S], pod_bytes(&c)));
    } else {
        owned.push(("mask", Dtype::F32, vec![B, S], pod_bytes(&d.mask)));
        owned.push(("advantages", Dtype::F32, vec![B], pod_bytes(&d.adv)));
    }
    let (o, i) = match ints {
        Dtype::I32 => {
            let o: Vec<i32> = d.offsets.iter().map(|&x| x as i32).collect();
            let i: Vec<i32> = d.ids.iter().map(|&x| x as i32).collect();
            (pod_bytes(&o), pod_bytes(&i))
        }
        _ => (pod_bytes(&d.offsets), pod_bytes(&d.ids)),
    };
    owned.push(("keep_offsets", ints, vec![d.offsets.len()], o));
    owned.push(("keep_ids", ints, vec![d.ids.len()], i));
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
    path
}

fn reference(d: &Data, cfg: &LossConfig) -> wgpu_policy_loss::reference::LossOutput {
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (x, mask, adv) = (f(&d.logits), f(&d.mask), f(&d.adv));
    let targets: Vec<u32> = d.targets.iter().map(|&t| t as u32).collect();
    let offsets: Vec<u32> = d.offsets.iter().map(|&x| x as u32).collect();
    let ids: Vec<u32> = d.ids.iter().map(|&x| x as u32).collect();
    let b = Batch {
        logits: &x,
        vocab: V,
        rows_per_seq: S,
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        old_logp: None,
        ref_logp: None,
    };
    let sampler = SamplerBatch {
        sampler: Sampler::default(),
        temperatures: None,
        keep: Some(KeptSets {
            offsets: &offsets,
            ids: &ids,
        }),
    };
    policy_loss_sampled(cfg, &b, None, &sampler).unwrap()
}

/// The loss from logits (I64 and I32 sets, with and without a softcap) and from hidden
/// + lm_head, against the reference; `--parts 3` gives the same bits.
#[test]
fn the_loss_over_given_sets_against_the_reference() {
    let d = data();
    for (k, ints) in [Dtype::I64, Dtype::I32].into_iter().enumerate() {
        let path = input(&format!("loss{k}.safetensors"), &d, false, false, ints);
        let cap = (k == 1).then_some(2.0f32);
        let cap_s = cap.map(|c| c.to_string());
        let mut flags = vec!["--entropy-coeff", "0.01"];
        if let Some(c) = &cap_s {
            flags.extend(["--logit-softcap", c]);
        }
        let file = eval_ok(&path, &tmp_path("kept", "out.safetensors"), &flags);
        let st = SafeTensors::deserialize(&file).unwrap();
        let cfg = LossConfig {
            entropy_coeff: 0.01,
            logit_softcap: cap,
            ..LossConfig::default()
        };
        let want = reference(&d, &cfg);
        let loss = tensor_f32s(&st, "loss")[0] as f64;
        assert!(
            (loss - want.loss).abs() <= 1e-5 + 1e-5 * want.loss.abs(),
            "{flags:?}: loss {loss} vs {}",
            want.loss
        );
        for (name, w) in [
            ("logprobs", &want.logp),
            ("entropy", &want.entropy),
            ("lse", &want.lse),
        ] {
            let g = tensor_f32s(&st, name);
            for r in (0..B * S).filter(|&r| r != MASKED) {
                assert!(
                    (g[r] as f64 - w[r]).abs() <= 1e-5 * (w[r].abs() + 1.0),
                    "{flags:?}: {name}[{r}] {} vs {}",
                    g[r],
                    w[r]
                );
            }
        }
        let grad = tensor_f32s(&st, "grad_logits");
        compare::logits_grad(&grad, &want.grad, compare::Format::F32)
            .unwrap_or_else(|e| panic!("{flags:?}: grad_logits {e}"));
        let mut split = flags.clone();
        split.extend(["--parts", "3"]);
        assert_eq!(
            eval_ok(&path, &tmp_path("kept", "parts.safetensors"), &split),
            file,
            "{flags:?}: --parts 3"
        );
        // vocabulary shards: every shard the whole rows' sets, keeping its columns' ids
        for k in ["2", "4"] {
            let mut sharded = flags.clone();
            sharded.extend(["--vocab-shards", k]);
            let file = eval_ok(&path, &tmp_path("kept", "shards.safetensors"), &sharded);
            let st = SafeTensors::deserialize(&file).unwrap();
            let loss = tensor_f32s(&st, "loss")[0] as f64;
            let tol = 1e-5 + 1e-5 * want.loss.abs();
            assert!(
                (loss - want.loss).abs() <= tol,
                "{sharded:?}: loss {loss} vs {}",
                want.loss
            );
            let lp = tensor_f32s(&st, "logprobs");
            for r in (0..B * S).filter(|&r| r != MASKED) {
                let tol = 1e-5 * (want.logp[r].abs() + 1.0);
                assert!(
                    (lp[r] as f64 - want.logp[r]).abs() <= tol,
                    "{sharded:?}: logprobs[{r}]"
                );
            }
            let grad = tensor_f32s(&st, "grad_logits");
            compare::logits_grad(&grad, &want.grad, compare::Format::F32)
                .unwrap_or_else(|e| panic!("{sharded:?}: grad_logits {e}"));
        }
    }
    // the head: the same loss from hidden and lm_head
    let path = input("head.safetensors", &d, true, false, Dtype::I64);
    let file = eval_ok(
        &path,
        &tmp_path("kept", "head-out.safetensors"),
        &["--head-chunk", "5"],
    );
    let st = SafeTensors::deserialize(&file).unwrap();
    let want = reference(&d, &LossConfig::default());
    let loss = tensor_f32s(&st, "loss")[0] as f64;
    assert!(
        (loss - want.loss).abs() <= 1e-4 * (1.0 + want.loss.abs()),
        "head: loss {loss} vs {}",
        want.loss
    );
}

/// The primitive over given sets, from logits and from the head, against the
/// reference's vector-Jacobian product.
#[test]
fn the_primitive_over_given_sets() {
    let d = data();
    for head in [false, true] {
        let path = input(
            &format!("prim{head}.safetensors"),
            &d,
            head,
            true,
            Dtype::I64,
        );
        let file = eval_ok(&path, &tmp_path("kept", "prim-out.safetensors"), &[]);
        let st = SafeTensors::deserialize(&file).unwrap();
        let want = reference(&d, &LossConfig::default());
        let got = tensor_f32s(&st, "logprobs");
        let lse = tensor_f32s(&st, "lse");
        for r in (0..B * S).filter(|&r| r != MASKED) {
            let tol = 1e-4 * (want.logp[r].abs() + 1.0);
            assert!(
                (got[r] as f64 - want.logp[r]).abs() <= tol,
                "head {head}: logprobs[{r}] {} vs {}",
                got[r],
                want.logp[r]
            );
            assert!(
                (lse[r] as f64 - want.lse[r]).abs() <= 1e-4 * (want.lse[r].abs() + 1.0),
                "head {head}: lse[{r}]"
            );
        }
        assert!(
            got[9] == 0.0,
            "head {head}: a set of one token has log-prob 0, got {}",
            got[9]
        );
        // vocabulary shards: the same outputs within f32 rounding (logits only)
        if !head {
            let sharded = eval_ok(
                &path,
                &tmp_path("kept", "prim-shards.safetensors"),
                &["--vocab-shards", "3"],
            );
            let st3 = SafeTensors::deserialize(&sharded).unwrap();
            for name in ["logprobs", "entropy", "lse", "grad_logits"] {
                let (x, y) = (tensor_f32s(&st, name), tensor_f32s(&st3, name));
                for (i, (p, q)) in x.iter().zip(&y).enumerate() {
                    let unread = name != "grad_logits" && i == MASKED;
                    assert!(
                        unread || (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                        "--vocab-shards 3: {name}[{i}]: {p} vs {q}"
                    );
                }
            }
        }
    }
}

/// The bad inputs of a given set (docs/MATH.md#bad-input), each naming its tensor or
/// flag.
#[test]
fn bad_kept_sets_name_their_tensor_or_flag() {
    let d = data();
    let good = input("good.safetensors", &d, false, false, Dtype::I64);
    for flag in ["--top-k=5", "--top-p=0.9", "--min-p=0.1"] {
        eval_fails_naming(&good, &[flag], "keep_offsets");
    }
    let mut e = data();
    e.targets[3] = (0..V as i64)
        .find(|v| !e.ids[e.offsets[3] as usize..e.offsets[4] as usize].contains(v))
        .unwrap();
    eval_fails_naming(
        &input("target.safetensors", &e, false, false, Dtype::I64),
        &[],
        "targets",
    );
    let mut e = data();
    e.ids[1] = e.ids[0];
    eval_fails_naming(
        &input("twice.safetensors", &e, false, false, Dtype::I64),
        &[],
        "keep_ids",
    );
    let mut e = data();
    e.ids[0] = V as i64;
    eval_fails_naming(
        &input("outside.safetensors", &e, false, false, Dtype::I64),
        &[],
        "keep_ids",
    );
    let mut e = data();
    e.ids[0] = -1;
    eval_fails_naming(
        &input("negative.safetensors", &e, false, false, Dtype::I64),
        &[],
        "keep_ids",
    );
    let mut e = data();
    e.offsets[4] = e.offsets[3] - 1;
    eval_fails_naming(
        &input("decreasing.safetensors", &e, false, false, Dtype::I64),
        &[],
        "keep_offsets",
    );
    let mut e = data();
    *e.offsets.last_mut().unwrap() += 1;
    eval_fails_naming(
        &input("end.safetensors", &e, false, false, Dtype::I64),
        &[],
        "keep_offsets",
    );
    let mut e = data();
    e.offsets.pop();
    eval_fails_naming(
        &input("short.safetensors", &e, false, false, Dtype::I64),
        &[],
        "keep_offsets",
    );
}
