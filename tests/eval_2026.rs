#![cfg(feature = "cli")]
//! `eval`'s contract for the modes and options of 2026 (docs/MATH.md#the-eval-command):
//! every new flag and value in `eval --help`, every row of its error table an error
//! naming the flag (an exit status other than 0 and 101, no panic), and the new scalar
//! outputs in the file.

mod common;

use std::path::PathBuf;

use common::{bin, eval, eval_fails_naming};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

const B: usize = 3;
const S: usize = 4;
const V: usize = 11;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-2026-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A valid 3 × 4 batch, V = 11, [B] advantages of both signs, with old, ref and
/// rollout log-probs (row 5 masked out); written once per name.
fn input(name: &str) -> PathBuf {
    let path = tmp(name);
    let n = B * S;
    let logits: Vec<f32> = (0..n * V)
        .map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0)
        .collect();
    let targets: Vec<i64> = (0..n).map(|r| (r * 7 % V) as i64).collect();
    let mask: Vec<f32> = (0..n).map(|r| if r == 5 { 0.0 } else { 1.0 }).collect();
    let adv = [1.0f32, -0.5, 0.8];
    let old: Vec<f32> = (0..n).map(|r| -2.5 + 0.05 * r as f32).collect();
    let refp: Vec<f32> = old.iter().map(|o| o + 0.2).collect();
    let roll: Vec<f32> = old.iter().map(|o| o - 0.3).collect();
    let bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    let owned = [
        ("logits", Dtype::F32, vec![B, S, V], bytes(&logits)),
        (
            "targets",
            Dtype::I64,
            vec![B, S],
            bytemuck::cast_slice(&targets).to_vec(),
        ),
        ("mask", Dtype::F32, vec![B, S], bytes(&mask)),
        ("advantages", Dtype::F32, vec![B], bytes(&adv)),
        ("old_logprobs", Dtype::F32, vec![B, S], bytes(&old)),
        ("ref_logprobs", Dtype::F32, vec![B, S], bytes(&refp)),
        ("rollout_logprobs", Dtype::F32, vec![B, S], bytes(&roll)),
    ];
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
    path
}

/// `eval --help` as one entry per flag: (the flag's header line, the entry with its
/// description, whitespace collapsed since clap may wrap lines).
fn help() -> Vec<(String, String)> {
    let out = bin().args(["eval", "--help"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut entries: Vec<(String, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent <= 6 && trimmed.starts_with('-') {
            entries.push((trimmed.to_string(), vec![trimmed]));
        } else if let Some(e) = entries.last_mut() {
            e.1.push(trimmed);
        }
    }
    entries
        .into_iter()
        .map(|(head, lines)| {
            (
                head,
                lines
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .collect()
}

/// The help entry of `flag`.
fn entry<'a>(help: &'a [(String, String)], flag: &str) -> &'a str {
    help.iter()
        .find(|(head, _)| head.split([' ', ',']).any(|w| w == flag))
        .map(|(_, e)| e.as_str())
        .unwrap_or_else(|| panic!("{flag} not in eval --help"))
}

#[test]
fn help_lists_every_new_flag_and_value() {
    let help = help();
    // every new flag, with VESPO's defaults
    for (flag, default) in [
        ("--dro-beta", None),
        ("--vespo-k-pos", Some("2")),
        ("--vespo-lambda-pos", Some("3")),
        ("--vespo-k-neg", Some("3")),
        ("--vespo-lambda-neg", Some("2")),
        ("--delta", None),
        ("--importance-sampling-level", None),
        ("--off-policy-mask-threshold", None),
        ("--bias-correction-kl", None),
    ] {
        let e = entry(&help, flag);
        if let Some(d) = default {
            assert!(e.contains(&format!("[default: {d}]")), "{flag}: {e}");
        }
    }
    // each flag's new values, in its own entry
    for (flag, values) in [
        (
            "--mode",
            &["geo_mean", "dppo_tv", "dppo_kl", "dro", "vespo"][..],
        ),
        ("--loss-agg-mode", &["token-sum"]),
        (
            "--kl-loss-type",
            &[
                "abs",
                "k1+",
                "kl+",
                "k2+",
                "mse+",
                "k3+",
                "low_var_kl+",
                "abs+",
            ],
        ),
        ("--loss-type", &["luspo", "vespo"]),
        ("--importance-sampling-level", &["token", "sequence"]),
        ("--clip-ratio-c", &["dppo_tv", "dppo_kl", "3.0"]),
        ("--clip-ratio-low", &["dppo_tv", "dppo_kl"]),
        ("--clip-ratio-high", &["dppo_tv", "dppo_kl"]),
    ] {
        let e = entry(&help, flag);
        for v in values {
            assert!(e.contains(v), "{flag}'s help lacks {v}: {e}");
        }
    }
}

/// `eval --help` groups its flags under headings, every flag (but clap's own `-h`)
/// under one of them and with a line saying what it does.
#[test]
fn help_groups_every_flag_under_a_heading_with_a_line() {
    let out = bin().args(["eval", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut heading: Option<&str> = None;
    let mut flags = 0;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            heading = Some(line);
            continue;
        }
        let flag = line.trim_start();
        if line.len() - flag.len() > 6 || !flag.starts_with("--") {
            continue;
        }
        flags += 1;
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        let described = !next.is_empty() && !next.starts_with('[') && !next.starts_with('-');
        assert!(described, "{flag} has no help line: {text}");
        assert!(
            heading.is_some_and(|h| h != "Options:"),
            "{flag} is under no heading of its own: {text}"
        );
    }
    assert!(flags >= 45, "{flags} flags in: {text}");
    for h in [
        "Input and output:",
        "Loss mode:",
        "Ratio and clipping:",
        "KL and entropy:",
        "Aggregation:",
        "Sampler's distribution:",
        "Rollout correction and masks:",
        "Covariance modes (clip_cov, kl_cov):",
        "Presets (TRL's loss_type):",
        "Execution:",
    ] {
        assert!(lines.contains(&h), "no heading {h}: {text}");
    }
}

/// The error table of docs/MATH.md#the-eval-command (2026): flags on a valid input, and
/// the flag the error names.
const ERROR_TABLE: &[(&[&str], &str)] = &[
    // --mode dro without --dro-beta, or --dro-beta ≤ 0
    (&["--mode", "dro"], "--dro-beta"),
    (&["--mode", "dro", "--dro-beta", "0"], "--dro-beta"),
    (&["--mode", "dro", "--dro-beta", "-1"], "--dro-beta"),
    (&["--mode", "dro", "--dro-beta", "nan"], "--dro-beta"),
    // --delta ≤ 1, with another mode, or with --clip-ratio-c
    (&["--delta", "1"], "--delta"),
    (&["--delta", "0.5"], "--delta"),
    (&["--delta", "-2"], "--delta"),
    (&["--delta", "nan"], "--delta"),
    (&["--delta", "2", "--mode", "cispo"], "--delta"),
    (&["--delta", "2", "--mode", "dppo_tv"], "--delta"),
    (&["--delta", "2", "--loss-type", "vespo"], "--delta"),
    (&["--delta", "2", "--clip-ratio-c", "3"], "--delta"),
    (
        &["--mode", "gspo", "--delta", "2", "--clip-ratio-c", "3"],
        "--delta",
    ),
    // --importance-sampling-level: unknown; sequence with another mode; token
    // with --loss-type luspo
    (
        &["--importance-sampling-level", "bogus"],
        "--importance-sampling-level",
    ),
    (
        &[
            "--importance-sampling-level",
            "sequence",
            "--mode",
            "reinforce",
        ],
        "--importance-sampling-level",
    ),
    (
        &["--importance-sampling-level", "sequence", "--mode", "gspo"],
        "--importance-sampling-level",
    ),
    (
        &[
            "--importance-sampling-level",
            "sequence",
            "--loss-type",
            "vespo",
        ],
        "--importance-sampling-level",
    ),
    (
        &[
            "--importance-sampling-level",
            "token",
            "--loss-type",
            "luspo",
        ],
        "--importance-sampling-level",
    ),
    // geo_mean takes no mask
    (
        &["--mode", "geo_mean", "--top-entropy-quantile", "0.5"],
        "--top-entropy-quantile",
    ),
    (
        &["--mode", "geo_mean", "--off-policy-mask-threshold", "0.1"],
        "--off-policy-mask-threshold",
    ),
    // the mask's threshold negative or not finite
    (
        &["--off-policy-mask-threshold", "-1"],
        "--off-policy-mask-threshold",
    ),
    (
        &["--off-policy-mask-threshold", "nan"],
        "--off-policy-mask-threshold",
    ),
    (
        &["--off-policy-mask-threshold", "inf"],
        "--off-policy-mask-threshold",
    ),
    // vespo takes the rollout correction at the token level only
    (
        &["--mode", "vespo", "--rollout-is", "sequence"],
        "--rollout-is",
    ),
    (
        &["--mode", "vespo", "--rollout-is", "geometric"],
        "--rollout-is",
    ),
    (
        &["--loss-type", "vespo", "--rollout-is", "sequence"],
        "--rollout-is",
    ),
    // unknown names
    (&["--kl-loss-type", "k4"], "--kl-loss-type"),
    (&["--kl-loss-type", "k2++"], "--kl-loss-type"),
    (&["--kl-loss-type", "abs-"], "--kl-loss-type"),
    (&["--loss-agg-mode", "token-sum-norm"], "--loss-agg-mode"),
    (&["--loss-agg-mode", "tokensum"], "--loss-agg-mode"),
    (&["--mode", "geomean"], "--mode"),
    (&["--loss-type", "lspo"], "--loss-type"),
    // VESPO's weights are finite
    (
        &["--mode", "vespo", "--vespo-k-pos", "nan"],
        "--vespo-k-pos",
    ),
    (
        &["--mode", "vespo", "--vespo-lambda-neg", "inf"],
        "--vespo-lambda-neg",
    ),
];

#[test]
fn every_row_of_the_error_table_names_its_flag() {
    let input = input("errors.safetensors");
    for (flags, named) in ERROR_TABLE {
        eval_fails_naming(&input, flags, named);
    }
}

/// The scalar `name` of an output file (F32, shape []).
fn scalar(st: &SafeTensors<'_>, name: &str) -> f32 {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("no {name} in the output: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    assert_eq!(t.shape(), &[] as &[usize], "{name} is a scalar");
    f32::from_le_bytes(t.data().try_into().unwrap())
}

/// The new modes and the mask run through `eval` and write their scalars: the mask's
/// kept share in [0, 1] (1 without it), VESPO's mean φ positive (0 in other modes).
#[test]
fn new_modes_write_their_scalars() {
    let input = input("modes.safetensors");
    let output = tmp("modes-out.safetensors");
    let runs: &[&[&str]] = &[
        &["--mode", "dro", "--dro-beta", "0.1"],
        &["--mode", "vespo"],
        &["--loss-type", "vespo"],
        &["--off-policy-mask-threshold", "0.1"],
        &[
            "--off-policy-mask-threshold",
            "0.1",
            "--rollout-is",
            "token",
        ],
    ];
    for flags in runs {
        let out = eval(&input, &output, flags);
        assert!(
            out.status.success(),
            "eval {flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = std::fs::read(&output).unwrap();
        let st = SafeTensors::deserialize(&file).unwrap();
        let loss = scalar(&st, "loss");
        assert!(loss.is_finite(), "{flags:?}: loss {loss}");
        let kept = scalar(&st, "off_policy_mask_frac");
        let phi = scalar(&st, "vespo_phi_seq_mean");
        let masked = flags.contains(&"--off-policy-mask-threshold");
        let vespo = flags.contains(&"vespo");
        assert!((0.0..=1.0).contains(&kept), "{flags:?}: kept {kept}");
        if !masked {
            assert_eq!(
                kept, 1.0,
                "{flags:?}: off_policy_mask_frac without the mask"
            );
        }
        if vespo {
            assert!(phi.is_finite() && phi > 0.0, "{flags:?}: φ {phi}");
        } else {
            assert_eq!(phi, 0.0, "{flags:?}: vespo_phi_seq_mean outside vespo");
        }
    }
}
