#![cfg(feature = "cli")]
//! `eval --positions shifted`: a causal LM's logits `[B, S, V]` (or hidden `[B, S, H]`)
//! against its input ids `[B, S]`, every per-token tensor `[B, S]` of the predicted
//! token. On every adapter, each case's outputs are those of `--positions aligned` on
//! the sliced tensors (logits[:, :-1], targets[:, 1:], per-token tensors [:, 1:], the
//! kept CSR's rows of positions 1..S) bit for bit, since the call is the same rows in
//! the same order; logprobs, entropy and lse are 0 at position 0 and the gradient's last
//! row of each sequence is 0. Every shifted file holds garbage where nothing is read
//! (position 0 of the per-token tensors, the last logits row), which must never be an
//! error; a bad value elsewhere names the file's row.

mod common;

use std::path::PathBuf;

use common::{bin, eval_fails_naming, eval_ok, natives, pod_bytes, random_logits, rng, tmp_path};
use rand::RngExt;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

const B: usize = 3;
const S: usize = 5;
const V: usize = 23;
const H: usize = 8;
const ROWS: usize = B * S;

/// How a shifted file's tensor becomes the aligned file's.
#[derive(Clone, Copy)]
enum Kind {
    /// `[B, S, W]` rows of the model (logits, hidden): positions `0 .. S − 1`.
    Rows,
    /// `[B, S]` per-token values: positions `1 .. S`.
    Tokens,
    /// Anything else (per-sequence advantages, lm_head): as it is.
    Whole,
}

struct Tensor {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// A shifted file and its aligned equivalent, built tensor by tensor.
#[derive(Default)]
struct Files {
    shifted: Vec<Tensor>,
    aligned: Vec<Tensor>,
}

/// `bytes` of `B·S` rows without position `skip` of each sequence.
fn drop_position(bytes: &[u8], skip: usize) -> Vec<u8> {
    let w = bytes.len() / ROWS;
    (0..ROWS)
        .filter(|r| r % S != skip)
        .flat_map(|r| bytes[r * w..(r + 1) * w].iter().copied())
        .collect()
}

impl Files {
    fn add(
        &mut self,
        name: &'static str,
        dtype: Dtype,
        shape: Vec<usize>,
        bytes: Vec<u8>,
        kind: Kind,
    ) {
        let (aligned_shape, aligned) = match kind {
            Kind::Rows => {
                let mut s = shape.clone();
                s[1] -= 1;
                (s, drop_position(&bytes, S - 1))
            }
            Kind::Tokens => (vec![B, S - 1], drop_position(&bytes, 0)),
            Kind::Whole => (shape.clone(), bytes.clone()),
        };
        self.aligned.push(Tensor {
            name,
            dtype,
            shape: aligned_shape,
            bytes: aligned,
        });
        self.shifted.push(Tensor {
            name,
            dtype,
            shape,
            bytes,
        });
    }

    fn tokens(&mut self, name: &'static str, v: &[f32]) {
        self.add(name, Dtype::F32, vec![B, S], pod_bytes(v), Kind::Tokens);
    }

    fn targets(&mut self, ids: &[i64]) {
        self.add(
            "targets",
            Dtype::I64,
            vec![B, S],
            pod_bytes(ids),
            Kind::Tokens,
        );
    }

    fn logits(&mut self, x: &[f32]) {
        self.add(
            "logits",
            Dtype::F32,
            vec![B, S, V],
            pod_bytes(x),
            Kind::Rows,
        );
    }

    /// Kept sets of the `B·S` rows (CSR); the aligned file keeps positions 1..S.
    fn kept(&mut self, sets: &[Vec<i64>]) {
        let csr = |rows: &[&Vec<i64>]| {
            let mut offsets = vec![0i64];
            let mut ids = Vec::new();
            for r in rows {
                ids.extend_from_slice(r);
                offsets.push(ids.len() as i64);
            }
            (offsets, ids)
        };
        let all: Vec<&Vec<i64>> = sets.iter().collect();
        let read: Vec<&Vec<i64>> = sets
            .iter()
            .enumerate()
            .filter(|(r, _)| r % S != 0)
            .map(|(_, s)| s)
            .collect();
        for (list, rows) in [(&mut self.shifted, all), (&mut self.aligned, read)] {
            let (offsets, ids) = csr(&rows);
            list.push(Tensor {
                name: "keep_offsets",
                dtype: Dtype::I64,
                shape: vec![offsets.len()],
                bytes: pod_bytes(&offsets),
            });
            list.push(Tensor {
                name: "keep_ids",
                dtype: Dtype::I64,
                shape: vec![ids.len()],
                bytes: pod_bytes(&ids),
            });
        }
    }

    /// Both files written: (shifted, aligned).
    fn write(&self, tag: &str) -> (PathBuf, PathBuf) {
        let write = |list: &[Tensor], name: String| {
            let path = tmp_path("positions", &name);
            let views: Vec<(String, TensorView<'_>)> = list
                .iter()
                .map(|t| {
                    let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap();
                    (t.name.to_string(), view)
                })
                .collect();
            safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
            path
        };
        (
            write(&self.shifted, format!("{tag}-shifted.safetensors")),
            write(&self.aligned, format!("{tag}-aligned.safetensors")),
        )
    }
}

/// Logits with the last row of each sequence NaN (it predicts nothing, so is never read).
fn logits(seed: u64) -> Vec<f32> {
    let mut x = random_logits(seed, ROWS * V, 1.5);
    for b in 0..B {
        x[((b + 1) * S - 1) * V..(b + 1) * S * V].fill(f32::NAN);
    }
    x
}

/// Ids in [0, V) from position 1, and ids outside it at position 0.
fn ids(seed: u64) -> Vec<i64> {
    let mut r = rng(seed);
    (0..ROWS)
        .map(|i| match i % S {
            0 if i % 2 == 0 => -7,
            0 => 1_000_000,
            _ => r.random_range(0..V as i64),
        })
        .collect()
}

/// Row `(b, s)`'s target: the largest logit of the row that predicts it, kept by any
/// top-k, top-p or min-p.
fn argmax_ids(x: &[f32]) -> Vec<i64> {
    (0..ROWS)
        .map(|r| match r % S {
            0 => -1,
            _ => {
                let row = &x[(r - 1) * V..r * V];
                (0..V).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as i64
            }
        })
        .collect()
}

/// Per-token values `f(r)`, and `at0` at position 0.
fn tokens(at0: f32, mut f: impl FnMut(usize) -> f32) -> Vec<f32> {
    (0..ROWS)
        .map(|r| if r % S == 0 { at0 } else { f(r) })
        .collect()
}

/// A mask with one padding token inside the batch and NaN at position 0.
fn mask() -> Vec<f32> {
    tokens(f32::NAN, |r| (r != S + 3) as u32 as f32)
}

/// The loss's tensors: logits, ids, mask, [B, S] advantages and old, ref and rollout
/// log-probs near the current ones (some ratios clip).
fn loss_files(seed: u64) -> Files {
    let mut f = Files::default();
    f.logits(&logits(seed));
    f.targets(&ids(seed));
    f.tokens("mask", &mask());
    f.tokens(
        "advantages",
        &tokens(f32::NAN, |r| ((r * 7 % 5) as f32 - 2.0) * 0.4),
    );
    let mut r = rng(seed + 1);
    let mut near =
        |at: f32| -> Vec<f32> { tokens(f32::NAN, |_| at + r.random_range(-0.4f32..0.4)) };
    let (old, refp, roll) = (near(-3.0), near(-3.1), near(-2.9));
    f.tokens("old_logprobs", &old);
    f.tokens("ref_logprobs", &refp);
    f.tokens("rollout_logprobs", &roll);
    f
}

/// Each output of `eval` on both files against the other: per-token outputs `[B, S]`
/// with 0 at position 0 and the aligned values after it, gradients of rows `[B, S, W]`
/// with the last row 0 and the aligned rows before it, the rest the same bytes.
fn compare(shifted: &[u8], aligned: &[u8], what: &str) {
    let (s, a) = (
        SafeTensors::deserialize(shifted).unwrap(),
        SafeTensors::deserialize(aligned).unwrap(),
    );
    let mut names = s.names();
    names.sort();
    let mut want = a.names();
    want.sort();
    assert_eq!(names, want, "{what}: the outputs");
    for name in names {
        let (ts, ta) = (s.tensor(name).unwrap(), a.tensor(name).unwrap());
        let (sd, ad) = (ts.data(), ta.data());
        let (skip, shape) = match name {
            "logprobs" | "entropy" | "lse" => (0, vec![B, S]),
            "grad_logits" => (S - 1, vec![B, S, V]),
            "grad_hidden" => (S - 1, vec![B, S, H]),
            _ => {
                assert_eq!(ts.shape(), ta.shape(), "{what}: {name}'s shape");
                assert!(sd == ad, "{what}: {name} differs from aligned's");
                continue;
            }
        };
        assert_eq!(ts.shape(), shape, "{what}: {name}'s shape");
        let w = sd.len() / ROWS;
        for r in (0..ROWS).filter(|r| r % S == skip) {
            let row = &sd[r * w..(r + 1) * w];
            assert!(
                row.iter().all(|&x| x == 0),
                "{what}: {name}'s row {r} is not 0"
            );
        }
        assert!(
            drop_position(sd, skip) == ad,
            "{what}: {name} differs from aligned's rows"
        );
    }
}

/// `eval` of both files with `flags` on every adapter, compared.
fn check(tag: &str, files: &Files, flags: &[&str]) {
    let (shifted, aligned) = files.write(tag);
    for ctx in natives() {
        let adapter = ctx.describe();
        let mut f: Vec<&str> = vec!["--adapter", &adapter];
        f.extend_from_slice(flags);
        let out = tmp_path("positions", &format!("{tag}-out.safetensors"));
        let want = eval_ok(&aligned, &out, &f);
        f.extend_from_slice(&["--positions", "shifted"]);
        let got = eval_ok(&shifted, &out, &f);
        compare(&got, &want, &format!("{tag} {flags:?} on {adapter}"));
    }
}

#[test]
fn ppo_clip_with_old_ref_rollout_and_per_token_advantages() {
    let files = loss_files(1);
    let flags = [
        "--mode",
        "ppo_clip",
        "--kl-coef",
        "0.1",
        "--entropy-coeff",
        "0.01",
        "--rollout-is",
        "token",
        "--clip-ratio-c",
        "3",
    ];
    check("ppo", &files, &flags);
    // the gradient in bf16: rows of 2-byte elements put back
    let mut bf16 = flags.to_vec();
    bf16.extend_from_slice(&["--grad-dtype", "bf16"]);
    check("ppo-bf16", &files, &bf16);
}

#[test]
fn gspo_with_per_sequence_advantages_and_seq_mean() {
    let mut f = Files::default();
    let full = loss_files(2);
    for t in full.shifted.iter().filter(|t| t.name != "advantages") {
        let kind = match t.name {
            "logits" => Kind::Rows,
            _ => Kind::Tokens,
        };
        f.add(t.name, t.dtype, t.shape.clone(), t.bytes.clone(), kind);
    }
    let adv = [0.9f32, -0.6, 0.3];
    f.add(
        "advantages",
        Dtype::F32,
        vec![B],
        pod_bytes(&adv),
        Kind::Whole,
    );
    let flags = ["--mode", "gspo", "--loss-agg-mode", "seq-mean-token-mean"];
    check("gspo", &f, &flags);
    let reinforce = [
        "--mode",
        "reinforce",
        "--loss-agg-mode",
        "seq-mean-token-mean",
    ];
    check("reinforce", &f, &reinforce);
}

/// `--parts 2` (parts of whole sequences, B = 3) and `--vocab-shards 3`.
#[test]
fn parts_and_vocab_shards() {
    let files = loss_files(3);
    check("parts", &files, &["--parts", "2", "--kl-coef", "0.05"]);
    check(
        "shards",
        &files,
        &["--vocab-shards", "3", "--entropy-coeff", "0.02"],
    );
}

/// The primitive: upstream tensors and temperatures, each NaN (or a bad temperature)
/// at position 0; alone, with `--parts 2`, and (without temperatures) over shards.
#[test]
fn the_primitive_with_upstream_tensors() {
    let mut f = Files::default();
    f.logits(&logits(4));
    f.targets(&ids(4));
    f.tokens(
        "upstream_logprobs",
        &tokens(f32::NAN, |r| 0.3 - 0.05 * r as f32),
    );
    f.tokens(
        "upstream_entropy",
        &tokens(f32::NAN, |r| 0.02 * (r % 3) as f32),
    );
    f.tokens(
        "upstream_lse",
        &tokens(f32::NAN, |r| if r == 7 { 0.0 } else { 0.1 }),
    );
    let mut with_temps = Files::default();
    for t in &f.shifted {
        let kind = if t.name == "logits" {
            Kind::Rows
        } else {
            Kind::Tokens
        };
        with_temps.add(t.name, t.dtype, t.shape.clone(), t.bytes.clone(), kind);
    }
    with_temps.tokens("temperatures", &tokens(-1.0, |r| 0.7 + 0.05 * r as f32));
    check("primitive", &with_temps, &["--logit-softcap", "3"]);
    check("primitive-parts", &with_temps, &["--parts", "2"]);
    check("primitive-shards", &f, &["--vocab-shards", "2"]);
}

/// The fused head: hidden `[B, S, H]` (its last row of each sequence NaN) and
/// lm_head `[V, H]`; grad_hidden's last row 0, grad_lm_head the same bytes.
#[test]
fn the_head_with_hidden_and_lm_head() {
    let mut f = Files::default();
    let mut hidden = random_logits(5, ROWS * H, 0.8);
    for b in 0..B {
        hidden[((b + 1) * S - 1) * H..(b + 1) * S * H].fill(f32::NAN);
    }
    let w = random_logits(6, V * H, 0.5);
    f.add(
        "hidden",
        Dtype::F32,
        vec![B, S, H],
        pod_bytes(&hidden),
        Kind::Rows,
    );
    f.add(
        "lm_head",
        Dtype::F32,
        vec![V, H],
        pod_bytes(&w),
        Kind::Whole,
    );
    let full = loss_files(5);
    for t in full.shifted.iter().filter(|t| t.name != "logits") {
        f.add(
            t.name,
            t.dtype,
            t.shape.clone(),
            t.bytes.clone(),
            Kind::Tokens,
        );
    }
    check("head", &f, &["--kl-coef", "0.1", "--head-chunk", "4"]);
    let mut primitive = Files::default();
    for t in f
        .shifted
        .iter()
        .filter(|t| ["hidden", "lm_head", "targets"].contains(&t.name))
    {
        let kind = match t.name {
            "hidden" => Kind::Rows,
            "lm_head" => Kind::Whole,
            _ => Kind::Tokens,
        };
        primitive.add(t.name, t.dtype, t.shape.clone(), t.bytes.clone(), kind);
    }
    primitive.tokens(
        "upstream_logprobs",
        &tokens(f32::NAN, |r| 0.2 - 0.03 * r as f32),
    );
    check("head-primitive", &primitive, &[]);
}

/// A given kept set per token (position 0's ids outside the vocabulary and twice) and
/// per-token temperatures (position 0's not > 0), for the loss and for `--parts 2`.
#[test]
fn a_given_kept_set_and_temperatures() {
    let x = logits(7);
    let y = ids(7);
    let sets: Vec<Vec<i64>> = (0..ROWS)
        .map(|r| match r % S {
            0 => vec![V as i64 + 4, 2, 2],
            _ if r % 4 == 1 => Vec::new(),
            _ => {
                let mut s: Vec<i64> = (0..V as i64).filter(|v| (v + r as i64) % 3 == 0).collect();
                if !s.contains(&y[r]) {
                    s.push(y[r]);
                }
                s
            }
        })
        .collect();
    let mut f = Files::default();
    f.logits(&x);
    f.targets(&y);
    f.tokens("mask", &mask());
    f.add(
        "advantages",
        Dtype::F32,
        vec![B],
        pod_bytes(&[0.5f32, -1.0, 0.25]),
        Kind::Whole,
    );
    f.tokens(
        "old_logprobs",
        &tokens(f32::NAN, |r| -2.0 - 0.01 * r as f32),
    );
    f.tokens("temperatures", &tokens(0.0, |r| 0.8 + 0.03 * r as f32));
    f.kept(&sets);
    check("kept", &f, &[]);
    check("kept-parts", &f, &["--parts", "2", "--mode", "cispo"]);
}

/// The sampler's computed kept sets and softcap (targets the largest logit of the row
/// that predicts them, so always kept).
#[test]
fn the_samplers_flags() {
    let x = logits(8);
    let mut f = Files::default();
    f.logits(&x);
    f.targets(&argmax_ids(&x));
    f.tokens("mask", &mask());
    f.add(
        "advantages",
        Dtype::F32,
        vec![B],
        pod_bytes(&[1.0f32, -0.5, 0.8]),
        Kind::Whole,
    );
    let flags = [
        "--top-k",
        "5",
        "--top-p",
        "0.9",
        "--min-p",
        "0.01",
        "--logit-softcap",
        "3",
        "--temperature",
        "0.9",
    ];
    check("sampler", &f, &flags);
}

/// Position 0 is never read, whatever it holds: NaN mask, log-probs and advantages, ids
/// outside the vocabulary, a NaN last logits row; the outputs there are 0. A bad value
/// at a read position is an error naming the file's row.
#[test]
fn bad_values_at_position_0_are_not_errors_and_later_ones_name_the_files_row() {
    let files = loss_files(9);
    let (shifted, _) = files.write("bad0");
    let out = tmp_path("positions", "bad0-out.safetensors");
    let bytes = eval_ok(
        &shifted,
        &out,
        &["--positions", "shifted", "--kl-coef", "0.1"],
    );
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let metric = |n: &str| common::tensor_f32s(&st, n)[0];
    assert_eq!(metric("nonfinite_rows"), 0.0);
    assert!(metric("loss").is_finite());
    let lp = common::tensor_f32s(&st, "logprobs");
    assert!((0..B).all(|b| lp[b * S] == 0.0) && lp.iter().all(|v| v.is_finite()));
    // a NaN old log-prob at (1, 2), masked in: the file's row 1·S + 2
    let mut bad = Files::default();
    for t in &files.shifted {
        let mut bytes = t.bytes.clone();
        if t.name == "old_logprobs" {
            bytes[(S + 2) * 4..(S + 3) * 4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        bad.shifted.push(Tensor {
            bytes,
            shape: t.shape.clone(),
            ..*t
        });
    }
    let (path, _) = bad.write("bad2");
    let row = format!("row {}", S + 2);
    eval_fails_naming(&path, &["--positions", "shifted"], &row);
    eval_fails_naming(&path, &["--positions", "shifted"], "old_logprobs");
}

/// Shifting needs sequences: `[T, V]` logits (or `[T, H]` hidden), and sequences of
/// one position, are errors naming `--positions`.
#[test]
fn shifting_without_sequences_names_the_flag() {
    let x = random_logits(10, 4 * V, 1.0);
    let one = |name: &str, shape: Vec<usize>, rows: usize| {
        let path = tmp_path("positions", name);
        let ids = vec![1i64; rows];
        let m = vec![1.0f32; rows];
        let lead = shape[..shape.len() - 1].to_vec();
        let t = [
            (
                "logits",
                Dtype::F32,
                shape.clone(),
                pod_bytes(&x[..rows * V]),
            ),
            ("targets", Dtype::I64, lead.clone(), pod_bytes(&ids)),
            ("mask", Dtype::F32, lead.clone(), pod_bytes(&m)),
            ("advantages", Dtype::F32, lead, pod_bytes(&m)),
        ];
        let views: Vec<(String, TensorView<'_>)> = t
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::tensor::serialize_to_file(views, None, &path).unwrap();
        path
    };
    let flat = one("flat.safetensors", vec![4, V], 4);
    eval_fails_naming(&flat, &["--positions", "shifted"], "--positions");
    let short = one("short.safetensors", vec![4, 1, V], 4);
    eval_fails_naming(&short, &["--positions", "shifted"], "--positions");
    // the same files are fine aligned
    let out = tmp_path("positions", "flat-out.safetensors");
    eval_ok(&flat, &out, &["--positions", "aligned"]);
    eval_ok(&short, &out, &[]);
}

/// `eval --help` lists the flag with both values and its default.
#[test]
fn help_lists_the_flag() {
    let out = bin().args(["eval", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let entry = text
        .split("--positions")
        .nth(1)
        .expect("--positions in eval --help");
    let entry = entry.split("\n      --").next().unwrap();
    for v in ["aligned", "shifted", "[default: aligned]"] {
        assert!(entry.contains(v), "--positions' help lacks {v}: {entry}");
    }
}
