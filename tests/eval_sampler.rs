#![cfg(feature = "cli")]
//! `eval` under the sampler's distribution (docs/MATH.md#the-eval-command): a
//! `temperatures` tensor and `--logit-softcap` against the f64 reference, through
//! `--parts` with the same bits, and each bad input an error naming its flag or tensor
//! (an exit status other than 0 and 101).

mod common;

use std::path::{Path, PathBuf};

use common::primitive::primitive_ref;
use common::{bin, eval, eval_fails_naming};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgpu_policy_loss::reference::sampler::{Sampler, SamplerBatch};
use wgpu_policy_loss::reference::{compare, policy_loss_sampled, Batch};
use wgpu_policy_loss::LossConfig;

const B: usize = 3;
const S: usize = 4;
const V: usize = 13;
const MASKED: usize = 5;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-smp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

struct Data {
    logits: Vec<f32>,
    targets: Vec<i64>,
    mask: Vec<f32>,
    adv: Vec<f32>,
    old: Vec<f32>,
    temps: Vec<f32>,
}

/// A 3 × 4 batch, V = 13; row 5 masked out with a junk temperature there (ignored).
fn data() -> Data {
    let n = B * S;
    Data {
        logits: (0..n * V)
            .map(|i| ((i * 37 % 101) as f32 / 20.0) - 2.5)
            .collect(),
        targets: (0..n).map(|r| (r * 7 % V) as i64).collect(),
        mask: (0..n)
            .map(|r| if r == MASKED { 0.0 } else { 1.0 })
            .collect(),
        adv: vec![1.0, -0.5, 0.8],
        old: (0..n).map(|r| -2.5 + 0.05 * r as f32).collect(),
        temps: (0..n)
            .map(|r| match r {
                MASKED => -3.0,
                _ => 0.6 + 0.1 * r as f32,
            })
            .collect(),
    }
}

/// The input file of `d`, with `temps` as the `temperatures` tensor where given.
fn input(name: &str, d: &Data, temps: Option<(&[f32], Vec<usize>)>) -> PathBuf {
    let path = tmp(name);
    let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    let mut owned = vec![
        ("logits", Dtype::F32, vec![B, S, V], bytes(&d.logits)),
        (
            "targets",
            Dtype::I64,
            vec![B, S],
            bytemuck::cast_slice(&d.targets).to_vec(),
        ),
        ("mask", Dtype::F32, vec![B, S], bytes(&d.mask)),
        ("advantages", Dtype::F32, vec![B], bytes(&d.adv)),
        ("old_logprobs", Dtype::F32, vec![B, S], bytes(&d.old)),
    ];
    if let Some((t, shape)) = temps {
        owned.push(("temperatures", Dtype::F32, shape, bytes(t)));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
    path
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("no {name} in the output: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    bytemuck::pod_collect_to_vec(t.data())
}

fn run_ok(input: &Path, output: &Path, flags: &[&str]) -> Vec<u8> {
    let out = eval(input, output, flags);
    assert!(
        out.status.success(),
        "eval {flags:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(output).unwrap()
}

/// Temperatures and a softcap, alone and together, and split into parts: every output
/// against the reference, and the parts' bits those of the whole.
#[test]
fn temperatures_and_softcap_against_the_reference() {
    let d = data();
    let with_temps = input("temps.safetensors", &d, Some((&d.temps, vec![B, S])));
    let plain = input("plain.safetensors", &d, None);
    let output = tmp("out.safetensors");
    let runs: [(&Path, Option<f32>, bool); 3] = [
        (&with_temps, None, true),
        (&plain, Some(2.0), false),
        (&with_temps, Some(2.0), true),
    ];
    for (path, cap, temps) in runs {
        let cap_s = cap.map(|c| c.to_string());
        let mut flags = vec!["--entropy-coeff", "0.01"];
        if let Some(c) = &cap_s {
            flags.extend(["--logit-softcap", c]);
        }
        let file = run_ok(path, &output, &flags);
        let st = SafeTensors::deserialize(&file).unwrap();
        let cfg = LossConfig {
            entropy_coeff: 0.01,
            logit_softcap: cap,
            ..LossConfig::default()
        };
        let want = reference(&d, &cfg, temps);
        let what = format!("{flags:?} temps {temps}");
        let loss = f32s(&st, "loss")[0];
        assert!(
            (loss as f64 - want.loss).abs() <= 1e-5 + 1e-5 * want.loss.abs(),
            "{what}: loss {loss} vs {}",
            want.loss
        );
        for (name, w) in [
            ("logprobs", &want.logp),
            ("entropy", &want.entropy),
            ("lse", &want.lse),
        ] {
            let g = f32s(&st, name);
            for r in (0..B * S).filter(|&r| r != MASKED) {
                let tol = 1e-5 * (w[r].abs() + 1.0);
                assert!(
                    (g[r] as f64 - w[r]).abs() <= tol,
                    "{what}: {name}[{r}] {} vs {}",
                    g[r],
                    w[r]
                );
            }
        }
        let grad = f32s(&st, "grad_logits");
        compare::logits_grad(&grad, &want.grad, compare::Format::F32)
            .unwrap_or_else(|e| panic!("{what}: grad_logits {e}"));
        // three parts of one sequence each: the same bits
        let mut split = flags.clone();
        split.extend(["--parts", "3"]);
        let parts = run_ok(path, &tmp("parts.safetensors"), &split);
        assert_eq!(parts, file, "{what}: --parts 3 against one part");
    }
}

fn reference(d: &Data, cfg: &LossConfig, temps: bool) -> wgpu_policy_loss::reference::LossOutput {
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (x, mask, adv, old, t) = (f(&d.logits), f(&d.mask), f(&d.adv), f(&d.old), f(&d.temps));
    let targets: Vec<u32> = d.targets.iter().map(|&t| t as u32).collect();
    let b = Batch {
        logits: &x,
        vocab: V,
        rows_per_seq: S,
        targets: &targets,
        mask: &mask,
        advantages: &adv,
        old_logp: Some(&old),
        ref_logp: None,
    };
    let sampler = SamplerBatch {
        sampler: Sampler::default(),
        temperatures: temps.then_some(&t[..]),
        keep: None,
    };
    policy_loss_sampled(cfg, &b, None, &sampler).unwrap()
}

/// The bad inputs of docs/MATH.md#bad-input that temperatures and the softcap can meet.
#[test]
fn bad_temperatures_and_softcaps_name_their_flag_or_tensor() {
    let d = data();
    let good = input("good.safetensors", &d, Some((&d.temps, vec![B, S])));
    for c in ["0", "-1", "nan", "inf"] {
        eval_fails_naming(&good, &["--logit-softcap", c], "--logit-softcap");
    }
    // --temperature beside the tensor, even at 1
    eval_fails_naming(&good, &["--temperature", "1"], "--temperature");
    eval_fails_naming(&good, &["--temperature", "0.7"], "--temperature");
    // a bad value on a read row names the tensor and the row
    for (i, bad) in [0.0f32, -1.0, f32::NAN, f32::INFINITY]
        .into_iter()
        .enumerate()
    {
        let mut t = d.temps.clone();
        t[7] = bad;
        let path = input(&format!("bad{i}.safetensors"), &d, Some((&t, vec![B, S])));
        eval_fails_naming(&path, &[], "temperatures");
        eval_fails_naming(&path, &[], "row 7");
    }
    // the wrong shape
    let short = input("short.safetensors", &d, Some((&d.temps[..B], vec![B])));
    eval_fails_naming(&short, &[], "temperatures");
    // vocabulary shards take no per-row temperatures
    eval_fails_naming(&good, &["--vocab-shards", "2"], "temperatures");
}

/// `eval --help` lists the new flag.
#[test]
fn help_lists_the_softcap() {
    let out = bin().args(["eval", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--logit-softcap"), "{text}");
}

/// The primitive's input: logits, targets (padding on row 4, whose upstream values are
/// all 0, and on row 9, which reads only H), temperatures and the upstream vectors,
/// with `extra` tensors beside them.
fn primitive_input(
    name: &str,
    d: &Data,
    up: &[Vec<f32>; 3],
    extra: &[(&str, Vec<f32>)],
) -> PathBuf {
    let path = tmp(name);
    let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    let mut targets = d.targets.clone();
    targets[4] = -100;
    targets[9] = -100;
    let mut owned = vec![
        (
            "logits".to_string(),
            Dtype::F32,
            vec![B, S, V],
            bytes(&d.logits),
        ),
        (
            "targets".to_string(),
            Dtype::I64,
            vec![B, S],
            bytemuck::cast_slice(&targets).to_vec(),
        ),
        (
            "temperatures".to_string(),
            Dtype::F32,
            vec![B, S],
            bytes(&d.temps),
        ),
    ];
    for (k, n) in ["upstream_logprobs", "upstream_entropy", "upstream_lse"]
        .iter()
        .enumerate()
    {
        owned.push((n.to_string(), Dtype::F32, vec![B, S], bytes(&up[k])));
    }
    for (n, v) in extra {
        owned.push((n.to_string(), Dtype::F32, vec![B, S], bytes(v)));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
    path
}

fn upstream() -> [Vec<f32>; 3] {
    let n = B * S;
    let mut up = [0usize, 1, 2].map(|k| {
        (0..n)
            .map(|r| ((r * 5 + k * 3) % 7) as f32 / 3.0 - 1.0)
            .collect::<Vec<f32>>()
    });
    // rows 4 and 5 unread: padding's target, a junk temperature
    for u in &mut up {
        u[4] = 0.0;
        u[MASKED] = 0.0;
    }
    up[0][9] = 0.0;
    up[1][9] = 0.5;
    up
}

/// `eval` with upstream tensors runs the primitive: logprobs, entropy, lse and
/// grad_logits against the reference's vector-Jacobian product, with the softcap and
/// per-token temperatures, and the same bits in three parts.
#[test]
fn the_primitive_against_the_reference() {
    let (d, up) = (data(), upstream());
    let input = primitive_input("prim.safetensors", &d, &up, &[]);
    let output = tmp("prim-out.safetensors");
    let file = run_ok(&input, &output, &["--logit-softcap", "2"]);
    let st = SafeTensors::deserialize(&file).unwrap();
    let (lp, ent, lse, grad) = (
        f32s(&st, "logprobs"),
        f32s(&st, "entropy"),
        f32s(&st, "lse"),
        f32s(&st, "grad_logits"),
    );
    let x: Vec<f64> = d.logits.iter().map(|&v| v as f64).collect();
    let ids: Vec<u32> = d.targets.iter().map(|&t| t as u32).collect();
    let tau = |r: usize| d.temps[r] as f64;
    let reference = primitive_ref(&x, V, &ids, (&tau, Some(2.0)), [&up[0], &up[1], &up[2]]);
    let want = &reference.grad;
    for (r, row) in reference.rows.iter().enumerate() {
        let Some((row, y)) = row else {
            assert!(
                grad[r * V..(r + 1) * V].iter().all(|&g| g == 0.0),
                "row {r}"
            );
            continue;
        };
        let tol = |w: f64| 1e-5 * (w.abs() + 1.0);
        if let Some(y) = *y {
            let w = row.logp(y).unwrap();
            assert!(
                (lp[r] as f64 - w).abs() <= tol(w),
                "logprobs[{r}] {} vs {w}",
                lp[r]
            );
        }
        assert!(
            (ent[r] as f64 - row.entropy).abs() <= tol(10.0),
            "entropy[{r}]"
        );
        assert!((lse[r] as f64 - row.lse).abs() <= tol(row.lse), "lse[{r}]");
    }
    compare::logits_grad(&grad, want, compare::Format::F32)
        .unwrap_or_else(|e| panic!("grad_logits {e}"));
    let parts = run_ok(
        &input,
        &tmp("prim-parts.safetensors"),
        &["--logit-softcap", "2", "--parts", "3"],
    );
    assert_eq!(parts, file, "--parts 3 against one part");
}

/// The primitive's bad inputs: a loss tensor or flag beside the upstream tensors, a
/// NaN upstream value on a read row, a padding target where upstream_logprobs is not
/// 0, `--temperature` beside the temperatures, and the head's tensors (not yet).
#[test]
fn the_primitive_names_its_bad_input() {
    let (d, up) = (data(), upstream());
    let good = primitive_input("prim-good.safetensors", &d, &up, &[]);
    let with_mask = primitive_input(
        "prim-mask.safetensors",
        &d,
        &up,
        &[("mask", d.mask.clone())],
    );
    eval_fails_naming(&with_mask, &[], "mask");
    let with_adv = primitive_input(
        "prim-adv.safetensors",
        &d,
        &up,
        &[("advantages", d.mask.clone())],
    );
    eval_fails_naming(&with_adv, &[], "advantages");
    for flags in [
        &["--mode", "ppo_clip"][..],
        &["--kl-coef", "0.1"],
        &["--entropy-coeff", "0"],
    ] {
        eval_fails_naming(&good, flags, flags[0]);
    }
    eval_fails_naming(&good, &["--temperature", "1"], "--temperature");
    eval_fails_naming(&good, &["--logit-softcap", "0"], "--logit-softcap");
    let mut nan = up.clone();
    nan[1][7] = f32::NAN;
    let path = primitive_input("prim-nan.safetensors", &d, &nan, &[]);
    eval_fails_naming(&path, &[], "upstream_entropy");
    eval_fails_naming(&path, &[], "row 7");
    let mut pad = up.clone();
    pad[0][4] = 0.5; // row 4's target is padding
    let path = primitive_input("prim-pad.safetensors", &d, &pad, &[]);
    eval_fails_naming(&path, &[], "targets");
    let head = primitive_input(
        "prim-head.safetensors",
        &d,
        &up,
        &[("hidden", d.mask.clone())],
    );
    eval_fails_naming(&head, &[], "hidden");
}

/// The primitive's input from `hidden` `[B, S, H]` and `lm_head` `[V, H]` (targets as
/// `primitive_input`'s, padding on rows 4 and 9).
fn head_primitive_input(
    name: &str,
    d: &Data,
    up: &[Vec<f32>; 3],
    (hidden, w): (&[f32], &[f32]),
    h: usize,
) -> PathBuf {
    let path = tmp(name);
    let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    let mut targets = d.targets.clone();
    targets[4] = -100;
    targets[9] = -100;
    let mut owned = vec![
        ("hidden".to_string(), vec![B, S, h], bytes(hidden)),
        ("lm_head".to_string(), vec![V, h], bytes(w)),
        ("temperatures".to_string(), vec![B, S], bytes(&d.temps)),
    ];
    for (k, n) in ["upstream_logprobs", "upstream_entropy", "upstream_lse"]
        .iter()
        .enumerate()
    {
        owned.push((n.to_string(), vec![B, S], bytes(&up[k])));
    }
    let mut views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let ids = bytemuck::cast_slice::<i64, u8>(&targets).to_vec();
    views.push((
        "targets".into(),
        TensorView::new(Dtype::I64, vec![B, S], &ids).unwrap(),
    ));
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
    path
}

/// The primitive from `hidden` and `lm_head`: grad_hidden and grad_lm_head against the
/// reference's chain rule through the VJP, with `--head-chunk`.
#[test]
fn the_primitive_from_hidden_states() {
    use wgpu_policy_loss::reference::{head_grads, head_logits, head_magnitudes};
    const H: usize = 8;
    let (d, up) = (data(), upstream());
    let hidden: Vec<f32> = (0..B * S * H)
        .map(|i| ((i * 29 % 17) as f32 / 8.0) - 1.0)
        .collect();
    let w: Vec<f32> = (0..V * H)
        .map(|i| ((i * 13 % 23) as f32 / 11.0) - 1.0)
        .collect();
    let path = head_primitive_input("prim-head.safetensors", &d, &up, (&hidden, &w), H);
    let file = run_ok(
        &path,
        &tmp("prim-head-out.safetensors"),
        &["--head-chunk", "5"],
    );
    let st = SafeTensors::deserialize(&file).unwrap();
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let x = head_logits(&f64s(&hidden), &f64s(&w), H);
    let ids: Vec<u32> = d.targets.iter().map(|&t| t as u32).collect();
    let tau = |r: usize| d.temps[r] as f64;
    let want = primitive_ref(&x, V, &ids, (&tau, None), [&up[0], &up[1], &up[2]]);
    let (gz, read) = (&want.grad, &want.read);
    let (dh, dw) = head_grads(gz, &f64s(&hidden), &f64s(&w), H, read);
    let (sh, sw) = head_magnitudes(gz, &f64s(&hidden), &f64s(&w), H, read);
    let gz_max = compare::largest_finite(gz);
    compare::head_grad(
        &f32s(&st, "grad_hidden"),
        &dh,
        compare::Format::F32,
        V,
        gz_max,
        &sh,
    )
    .unwrap_or_else(|e| panic!("grad_hidden {e}"));
    compare::head_grad(
        &f32s(&st, "grad_lm_head"),
        &dw,
        compare::Format::F32,
        B * S,
        gz_max,
        &sw,
    )
    .unwrap_or_else(|e| panic!("grad_lm_head {e}"));
    eval_fails_naming(&path, &["--parts", "2"], "--parts");
}

/// Vocabulary shards take the softcap (each shard's partials through the same map):
/// `--vocab-shards 3` gives the unsharded outputs within f32 rounding.
#[test]
fn shards_take_the_softcap() {
    let d = data();
    let plain = input("shards.safetensors", &d, None);
    let one = run_ok(
        &plain,
        &tmp("shards-1.safetensors"),
        &["--logit-softcap", "1.5"],
    );
    let three = run_ok(
        &plain,
        &tmp("shards-3.safetensors"),
        &["--logit-softcap", "1.5", "--vocab-shards", "3"],
    );
    let (a, b) = (
        SafeTensors::deserialize(&one).unwrap(),
        SafeTensors::deserialize(&three).unwrap(),
    );
    for name in ["loss", "logprobs", "entropy", "lse", "grad_logits"] {
        let (x, y) = (f32s(&a, name), f32s(&b, name));
        for (i, (p, q)) in x.iter().zip(&y).enumerate() {
            if d.mask.get(i % (B * S)).is_some_and(|&m| m == 0.0)
                && name != "grad_logits"
                && name != "loss"
            {
                continue;
            }
            assert!(
                (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                "{name}[{i}]: {p} vs {q}"
            );
        }
    }
}
