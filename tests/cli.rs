#![cfg(feature = "cli")]
//! The binary's contracts, run as a user would.

mod common;

use common::bin;

/// Runs a subcommand with wgpu limited to a backend this platform does not have.
fn without_adapter(subcommand: &str) -> std::process::Output {
    let absent = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    bin()
        .arg(subcommand)
        .env("WGPU_BACKEND", absent)
        .output()
        .unwrap()
}

#[test]
fn info_lists_every_adapter() {
    let out = bin().arg("info").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let adapters = wgpu_policy_loss::adapters();
    assert!(!adapters.is_empty(), "no GPU adapter found");
    for a in adapters {
        let info = a.get_info();
        assert!(
            text.contains(&info.name),
            "{} missing from:\n{text}",
            info.name
        );
        assert!(text.contains(&format!("{:?}", info.backend)), "{text}");
    }
    for key in [
        "f16",
        "subgroups",
        "max storage binding",
        "max buffer",
        "workgroups",
    ] {
        assert!(text.contains(key), "`{key}` missing from:\n{text}");
    }
}

#[test]
fn bench_prints_a_table_and_json() {
    let out = bin()
        .args([
            "bench",
            "--shape",
            "32x1000",
            "--shape",
            "16x777:bf16",
            "--samples",
            "1",
            "--seconds",
            "0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "fused ms",
        "GB/s",
        "% copy",
        "unfused ms",
        "speed-up",
        "32x1000 f32",
        "16x777 bf16",
    ] {
        assert!(text.contains(key), "`{key}` missing from:\n{text}");
    }
    let out = bin()
        .args([
            "bench",
            "--json",
            "--shape",
            "8x500:f16",
            "--samples",
            "1",
            "--seconds",
            "0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    let open = wgpu_policy_loss::Context::open_all().unwrap();
    assert_eq!(rows.len(), open.contexts.len());
    for r in rows {
        assert_eq!(r["dtype"], "f16");
        assert!(r["fused_ms"].as_f64().unwrap() > 0.0);
        assert!(r["speedup"].as_f64().unwrap() > 0.0);
        assert!(r["pct_of_copy"].as_f64().unwrap() > 0.0);
    }
    // the stages, as a table and, beside it, as JSON in a file
    let json = std::env::temp_dir().join(format!("wpl-stages-{}.json", std::process::id()));
    let out = bin()
        .args([
            "bench",
            "--stages",
            "--shape",
            "64x300:bf16",
            "--samples",
            "1",
            "--seconds",
            "0",
            "--json-file",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for key in [
        "prepare ms",
        "row kernel ms",
        "forward ms",
        "fwd+bwd ms",
        "64x300 bf16",
    ] {
        assert!(text.contains(key), "`{key}` missing from:\n{text}");
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), open.contexts.len());
    for r in rows {
        for key in ["prepare_ms", "row_kernel_ms", "forward_ms", "fused_ms"] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
        }
        assert_eq!(r["rows"], 64);
    }
    let _ = std::fs::remove_file(&json);
    // a shape that cannot run is a row saying why, in the table and in the JSON
    for json in [false, true] {
        let mut cmd = bin();
        cmd.args([
            "bench",
            "--shape",
            "1x4294967295:f32",
            "--samples",
            "1",
            "--seconds",
            "0",
        ]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        if json {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let rows = v.as_array().unwrap();
            assert_eq!(rows.len(), open.contexts.len());
            assert!(
                rows.iter()
                    .all(|r| r["skipped"].as_str().unwrap().contains("buffer")),
                "{text}"
            );
        } else {
            assert!(text.contains("1x4294967295 f32     skipped: "), "{text}");
        }
    }
    // a bad shape is a clear error
    let out = bin().args(["bench", "--shape", "12by40"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ROWSxVOCAB"));
}

#[test]
fn check_passes_on_every_adapter() {
    let out = bin().arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all checks passed"), "{text}");
    for a in wgpu_policy_loss::adapters() {
        assert!(
            text.contains(&format!("{:?}", a.get_info().backend)),
            "{text}"
        );
    }
    assert!(text.contains("fallback") && text.contains("bf16"), "{text}");
    let out = without_adapter("check");
    assert!(!out.status.success(), "check passed with no adapter");
}

/// An adapter whose "name (Backend)" names no other adapter, for refusing it alone.
fn lone_adapter() -> Option<String> {
    let labels: Vec<String> = wgpu_policy_loss::adapters()
        .iter()
        .map(|a| wgpu_policy_loss::describe_info(&a.get_info()))
        .collect();
    let matches = |l: &String| {
        labels
            .iter()
            .filter(|o| o.to_lowercase().contains(&l.to_lowercase()))
            .count()
    };
    (labels.len() > 1)
        .then(|| labels.iter().find(|l| matches(l) == 1).cloned())
        .flatten()
}

/// A listed adapter that refuses a device (simulated here, as NVIDIA's headless GL
/// adapter does for real): `info` says so on its entry, `check` prints a row saying it
/// is unavailable and why and passes on the others, `bench` skips it on stderr, and
/// strict mode makes the refusal an error.
#[test]
fn an_adapter_that_cannot_open_a_device_is_reported_and_skipped() {
    use wgpu_policy_loss::{FAIL_DEVICE_ENV, STRICT_ENV};
    // no adapter opens: check fails, saying why
    let out = bin()
        .arg("check")
        .env(FAIL_DEVICE_ENV, "(")
        .env_remove(STRICT_ENV)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed with no adapter open");
    assert!(
        err.contains("no GPU adapter found that opens a device"),
        "{err}"
    );

    let Some(label) = lone_adapter() else {
        common::skipped_part(
            "one adapter refusing among others: fewer than two distinguishable adapters here",
        );
        return;
    };
    let run = |args: &[&str], strict: bool| {
        let mut cmd = bin();
        cmd.args(args)
            .env(FAIL_DEVICE_ENV, &label)
            .env_remove(STRICT_ENV);
        if strict {
            cmd.env(STRICT_ENV, "1");
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (name, backend) = label.rsplit_once(" (").unwrap();
    let backend = backend.trim_end_matches(')');

    let (ok, text) = run(&["info"], false);
    assert!(ok, "{text}");
    let entry = text
        .split("adapter ")
        .find(|e| e.contains(name) && e.contains(backend) && e.contains("UNAVAILABLE"))
        .unwrap_or_else(|| panic!("no unavailable entry for {label}:\n{text}"));
    assert!(entry.contains("refused on purpose"), "{entry}");
    assert!(text.contains("device:             opens"), "{text}");

    let (ok, text) = run(&["check"], false);
    assert!(ok, "one refusing adapter failed check:\n{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&label))
        .unwrap_or_else(|| panic!("no row for {label}:\n{text}"));
    assert!(row.contains("unavailable: refused on purpose"), "{row}");
    assert!(text.contains("all checks passed on the"), "{text}");
    assert!(
        text.lines().any(|l| l.contains(" ok")),
        "nothing ran:\n{text}"
    );

    let (ok, text) = run(&["check"], true);
    assert!(
        !ok && text.contains(STRICT_ENV) && text.contains(name),
        "{text}"
    );

    let shape = [
        "bench",
        "--json",
        "--shape",
        "8x100",
        "--samples",
        "1",
        "--seconds",
        "0",
    ];
    let (ok, text) = run(&shape, false);
    assert!(
        ok && text.contains(&format!("bench: skipped {label}")),
        "{text}"
    );
}

/// The final mean reward of a demo run's summary line.
fn final_reward(stdout: &str) -> f32 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("mean reward"))
        .expect("no summary line");
    let after = line.split("-> ").nth(1).expect("no final reward");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn demo_is_the_default_learns_and_is_deterministic() {
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // no subcommand: the demo, writing its plot into the working directory
    let out = bin().current_dir(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reward = final_reward(&text);
    assert!(reward >= 0.9, "final mean reward {reward} < 0.9:\n{text}");
    let svg = std::fs::read_to_string(dir.join("demo_reward.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("mean reward"));
    // the same seed gives the same curve, another seed another one
    let run = |seed: &str| {
        let out = bin()
            .args(["demo", "--quiet", "--steps", "40", "--seed", seed, "--plot"])
            .arg(dir.join(format!("{seed}.svg")))
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::read_to_string(dir.join(format!("{seed}.svg"))).unwrap()
    };
    assert_eq!(run("7"), run("7"), "two runs with one seed differ");
    assert_ne!(run("7"), run("8"), "the seed changes nothing");
}

/// The first mean reward of a demo run's summary line.
fn first_reward(stdout: &str) -> f32 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("mean reward"))
        .expect("no summary line");
    let before = line.split(" at step 1").next().unwrap();
    before.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn demo_learns_in_every_loss_mode_and_names_bad_flags() {
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-modes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mode in ["reinforce", "ppo_clip", "gspo"] {
        let out = bin()
            .args([
                "demo",
                "--quiet",
                "--steps",
                "60",
                "--group-size",
                "8",
                "--lr",
                "0.02",
            ])
            .args(["--mode", mode, "--plot"])
            .arg(dir.join(format!("{mode}.svg")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{mode}: {text}");
        let (first, last) = (first_reward(&text), final_reward(&text));
        assert!(last > first + 0.3, "{mode}: reward {first} -> {last}");
    }
    for (flags, named) in [
        (&["--steps", "0"][..], "--steps"),
        (&["--group-size", "1"], "--group-size"),
        (&["--lr=-1"], "--lr"),
        (&["--lr=nan"], "--lr"),
        (&["--entropy-coeff=-0.5"], "--entropy-coeff"),
        (&["--mode", "ppo"], "--mode"),
    ] {
        let out = bin()
            .current_dir(&dir)
            .args(["demo", "--quiet"])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} accepted");
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    // groups too large for the demo's one-lane backward loop where the adapter caps
    // loops (llvmpipe, lavapipe) are refused there, naming the flag; elsewhere they run
    let capped = wgpu_policy_loss::Context::new()
        .unwrap()
        .loop_limit()
        .is_some();
    let out = bin()
        .current_dir(&dir)
        .args(["demo", "--quiet", "--steps", "1", "--group-size", "64"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.success(), !capped, "{err}");
    assert!(!capped || err.contains("--group-size"), "{err}");
}

#[test]
fn info_fails_without_an_adapter() {
    let out = without_adapter("info");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no GPU adapter found"));
}

mod eval {
    use super::common::eval;
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    use wgpu_policy_loss::half::bf16;
    use wgpu_policy_loss::reference;
    use wgpu_policy_loss::reference::compare::{self, Format, Tolerance};
    use wgpu_policy_loss::{LossConfig, PolicyLossMode};

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn write(path: &std::path::Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::tensor::serialize_to_file(views, None, path).unwrap();
    }

    /// `eval` that must succeed: the bytes of the file it wrote.
    fn eval_ok(input: &std::path::Path, output: &std::path::Path, flags: &[&str]) -> Vec<u8> {
        let out = eval(input, output, flags);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(output).unwrap()
    }

    /// `eval` that must fail without a panic: its error output.
    fn eval_fails(input: &std::path::Path, flags: &[&str]) -> String {
        let out = eval(input, &tmp("never.safetensors"), flags);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "eval {flags:?} was accepted");
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    fn bytes<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
        bytemuck::cast_slice(v).to_vec()
    }

    fn scalar(st: &SafeTensors<'_>, name: &str) -> f32 {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.shape(), &[] as &[usize], "{name} is a scalar");
        f32::from_le_bytes(t.data().try_into().unwrap())
    }

    /// bf16 [B, S, V] logits, i64 ids (garbage where masked), bool mask, [B] advantages,
    /// old and ref log-probs; gspo with the KL term; bf16 gradient.
    #[test]
    fn round_trip_bf16_against_reference() {
        let (b, s, v) = (2usize, 5usize, 33usize);
        let n = b * s;
        let x: Vec<f32> = (0..n * v)
            .map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0)
            .collect();
        let xb: Vec<bf16> = x.iter().map(|&f| bf16::from_f32(f)).collect();
        let mask: Vec<u8> = (0..n).map(|i| (i % 4 != 0) as u8).collect();
        let ids: Vec<i64> = (0..n)
            .map(|i| {
                if mask[i] == 1 {
                    (i * 7 % v) as i64
                } else {
                    -100
                }
            })
            .collect();
        let adv = [0.9f32, -0.6];
        let old: Vec<f32> = (0..n).map(|i| -3.5 + 0.1 * i as f32).collect();
        let refp: Vec<f32> = (0..n).map(|i| -3.4 + 0.05 * i as f32).collect();
        let input = tmp("in.safetensors");
        let output = tmp("out.safetensors");
        write(
            &input,
            vec![
                ("logits", Dtype::BF16, vec![b, s, v], bytes(&xb)),
                ("targets", Dtype::I64, vec![b, s], bytes(&ids)),
                ("mask", Dtype::BOOL, vec![b, s], mask.clone()),
                ("advantages", Dtype::F32, vec![b], bytes(&adv)),
                ("old_logprobs", Dtype::F32, vec![b, s], bytes(&old)),
                ("ref_logprobs", Dtype::F32, vec![b, s], bytes(&refp)),
            ],
        );
        let flags = [
            "--mode",
            "gspo",
            "--kl-coef",
            "0.1",
            "--kl-loss-type",
            "k2",
            "--entropy-coeff",
            "0.01",
            "--loss-agg-mode",
            "seq-mean-token-mean",
            "--temperature",
            "0.9",
            "--grad-dtype",
            "bf16",
        ];
        let file = eval_ok(&input, &output, &flags);
        let st = SafeTensors::deserialize(&file).unwrap();

        // the rows in two buffers, one sequence each: the same file, bit for bit
        let parted = tmp("out_parts.safetensors");
        let mut flags = flags.to_vec();
        flags.extend(["--parts", "2"]);
        let parted_file = eval_ok(&input, &parted, &flags);
        assert!(parted_file == file, "--parts 2 changed the outputs");
        // more parts than sequences: an error naming the flag
        flags.extend(["--parts", "3"]);
        let err = eval_fails(&input, &flags);
        assert!(err.contains("--parts"), "{err}");

        // the vocabulary in 1 and 3 uneven shards through the sharded API: the same
        // outputs, to f32 rounding (the shards' statistics merge in another order)
        for k in ["1", "3"] {
            let sharded = tmp(&format!("out_shards{k}.safetensors"));
            let mut f = flags[..14].to_vec();
            f.extend(["--vocab-shards", k]);
            let bytes = eval_ok(&input, &sharded, &f);
            // one shard is the unsharded call, bit for bit
            assert!(
                k != "1" || bytes == file,
                "--vocab-shards 1 changed the outputs"
            );
            let sh = SafeTensors::deserialize(&bytes).unwrap();
            let (a, b) = (scalar(&sh, "loss"), scalar(&st, "loss"));
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "{k} shards: loss {a} vs {b}"
            );
            for name in ["logprobs", "entropy", "lse"] {
                let got: Vec<f32> = bytemuck::pod_collect_to_vec(sh.tensor(name).unwrap().data());
                let want: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data());
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    if y.is_nan() {
                        assert!(x.is_nan(), "{k} shards: {name}[{i}] {x}, want NaN");
                        continue;
                    }
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{k} shards: {name}[{i}] {x} vs {y}"
                    );
                }
            }
            let g = |st: &SafeTensors<'_>| -> Vec<f32> {
                bytemuck::pod_collect_to_vec::<u8, bf16>(st.tensor("grad_logits").unwrap().data())
                    .iter()
                    .map(|h| h.to_f32())
                    .collect()
            };
            let (ga, gb) = (g(&sh), g(&st));
            assert!(!ga.is_empty());
            // two computations, each within the rule of the exact gradient
            let gb: Vec<f64> = gb.iter().map(|&y| y as f64).collect();
            let rule = Tolerance::logits_grad(Format::BF16);
            compare::within(&ga, &gb, rule.plus(rule))
                .unwrap_or_else(|e| panic!("{k} shards: grad {e}"));
        }
        for bad in [
            &["--vocab-shards", "34"][..],
            &["--vocab-shards", "2", "--parts", "2"],
        ] {
            let mut f = flags[..14].to_vec();
            f.extend(bad);
            let err = eval_fails(&input, &f);
            assert!(err.contains("--vocab-shards"), "{err}");
        }

        let cfg = LossConfig {
            mode: PolicyLossMode::Gspo,
            kl_coef: 0.1,
            kl_loss_type: wgpu_policy_loss::KlEstimator::K2,
            entropy_coeff: 0.01,
            loss_agg_mode: wgpu_policy_loss::LossAggMode::SeqMeanTokenMean,
            temperature: 0.9,
            ..LossConfig::default()
        };
        let x64: Vec<f64> = xb.iter().map(|h| h.to_f64()).collect();
        let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let targets: Vec<u32> = ids.iter().map(|&i| i.max(0) as u32).collect();
        let want = reference::policy_loss(
            &cfg,
            &reference::Batch {
                logits: &x64,
                vocab: v,
                rows_per_seq: s,
                targets: &targets,
                mask: &mask.iter().map(|&m| m as f64).collect::<Vec<_>>(),
                advantages: &f(&adv),
                old_logp: Some(&f(&old)),
                ref_logp: Some(&f(&refp)),
            },
        )
        .unwrap();
        assert!((scalar(&st, "loss") as f64 - want.loss).abs() < 1e-5 * (1.0 + want.loss.abs()));
        for (name, w) in [
            ("pg_clipfrac", want.metrics.pg_clipfrac),
            ("pg_clipfrac_lower", want.metrics.pg_clipfrac_lower),
            ("ppo_kl", want.metrics.ppo_kl),
            ("kl", want.metrics.kl),
            ("entropy_mean", want.metrics.entropy_mean),
            ("nonfinite_rows", 0.0),
        ] {
            assert!(
                (scalar(&st, name) as f64 - w).abs() < 1e-5 * (1.0 + w.abs()),
                "{name}"
            );
        }
        let lp = st.tensor("logprobs").unwrap();
        assert_eq!((lp.dtype(), lp.shape()), (Dtype::F32, &[b, s][..]));
        let lp: Vec<f32> = bytemuck::pod_collect_to_vec(lp.data());
        for r in (0..n).filter(|&r| mask[r] == 1) {
            assert!((lp[r] as f64 - want.logp[r]).abs() < 1e-4, "logprobs[{r}]");
        }
        let ent = st.tensor("entropy").unwrap();
        assert_eq!((ent.dtype(), ent.shape()), (Dtype::F32, &[b, s][..]));
        let lse = st.tensor("lse").unwrap();
        assert_eq!((lse.dtype(), lse.shape()), (Dtype::F32, &[b, s][..]));
        let lse: Vec<f32> = bytemuck::pod_collect_to_vec(lse.data());
        for r in (0..n).filter(|&r| mask[r] == 1) {
            let w = want.lse[r];
            assert!(
                (lse[r] as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                "lse[{r}]"
            );
        }
        let g = st.tensor("grad_logits").unwrap();
        assert_eq!((g.dtype(), g.shape()), (Dtype::BF16, &[b, s, v][..]));
        let g: Vec<bf16> = bytemuck::pod_collect_to_vec(g.data());
        let g: Vec<f32> = g.iter().map(|h| h.to_f32()).collect();
        compare::logits_grad(&g, &want.grad, Format::BF16)
            .unwrap_or_else(|e| panic!("grad_logits {e}"));
    }

    /// [T, V] f32 logits with u8 mask, i32 ids and per-token advantages; defaults.
    #[test]
    fn round_trip_flat_f32() {
        let (t, v) = (6usize, 17usize);
        let x: Vec<f32> = (0..t * v)
            .map(|i| ((i * 13 % 29) as f32 / 7.0) - 2.0)
            .collect();
        let ids: Vec<i32> = (0..t as i32).map(|i| i * 3 % v as i32).collect();
        let mask = vec![1u8, 1, 0, 1, 1, 1];
        let adv: Vec<f32> = vec![0.5, -0.2, 9.0, 1.0, -1.0, 0.3];
        let input = tmp("flat.safetensors");
        let output = tmp("flat_out.safetensors");
        write(
            &input,
            vec![
                ("logits", Dtype::F32, vec![t, v], bytes(&x)),
                ("targets", Dtype::I32, vec![t], bytes(&ids)),
                ("mask", Dtype::U8, vec![t], mask.clone()),
                ("advantages", Dtype::F32, vec![t], bytes(&adv)),
            ],
        );
        let file = eval_ok(&input, &output, &[]);
        let st = SafeTensors::deserialize(&file).unwrap();
        let x64: Vec<f64> = x.iter().map(|&a| a as f64).collect();
        let want = reference::policy_loss(
            &LossConfig::default(),
            &reference::Batch {
                logits: &x64,
                vocab: v,
                rows_per_seq: t,
                targets: &ids.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                mask: &mask.iter().map(|&m| m as f64).collect::<Vec<_>>(),
                advantages: &adv.iter().map(|&a| a as f64).collect::<Vec<_>>(),
                old_logp: None,
                ref_logp: None,
            },
        )
        .unwrap();
        assert!((scalar(&st, "loss") as f64 - want.loss).abs() < 1e-5);
        let g = st.tensor("grad_logits").unwrap();
        assert_eq!((g.dtype(), g.shape()), (Dtype::F32, &[t, v][..]));
        let g: Vec<f32> = bytemuck::pod_collect_to_vec(g.data());
        compare::logits_grad(&g, &want.grad, Format::F32)
            .unwrap_or_else(|e| panic!("grad_logits {e}"));
    }

    fn eval_err(tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>, file: &str) -> String {
        let input = tmp(file);
        write(&input, tensors);
        eval_fails(&input, &[])
    }

    /// The new families through eval: kl_cov with the top-entropy mask and a sequence
    /// rollout correction from a `rollout_logprobs` tensor, against the reference; the
    /// new scalars written; TRL's names; bad values named by their flag.
    #[test]
    fn new_losses_flags_and_scalars() {
        let (b, s, v) = (3usize, 6usize, 29usize);
        let n = b * s;
        let x: Vec<f32> = (0..n * v)
            .map(|i| ((i * 53 % 97) as f32 / 20.0) - 2.5 + (i / v) as f32 * 0.1)
            .collect();
        let mask: Vec<f32> = (0..n).map(|i| (i % 5 != 4) as u8 as f32).collect();
        let ids: Vec<i64> = (0..n).map(|i| (i * 11 % v) as i64).collect();
        let adv = [1.1f32, -0.7, 0.4];
        let old: Vec<f32> = (0..n).map(|i| -3.3 + 0.05 * i as f32).collect();
        let roll: Vec<f32> = (0..n)
            .map(|i| {
                if mask[i] > 0.0 {
                    -3.0 + 0.03 * i as f32
                } else {
                    f32::NAN
                }
            })
            .collect();
        let input = tmp("new_losses.safetensors");
        let output = tmp("new_losses_out.safetensors");
        let tensors = |roll_shape: Vec<usize>| {
            vec![
                ("logits", Dtype::F32, vec![b, s, v], bytes(&x)),
                ("targets", Dtype::I64, vec![b, s], bytes(&ids)),
                ("mask", Dtype::F32, vec![b, s], bytes(&mask)),
                ("advantages", Dtype::F32, vec![b], bytes(&adv)),
                ("old_logprobs", Dtype::F32, vec![b, s], bytes(&old)),
                ("rollout_logprobs", Dtype::F32, roll_shape, bytes(&roll)),
            ]
        };
        write(&input, tensors(vec![b, s]));
        let flags = [
            "--mode",
            "kl_cov",
            "--kl-cov-ratio",
            "0.25",
            "--ppo-kl-coef",
            "0.3",
            "--top-entropy-quantile",
            "0.6",
            "--rollout-is",
            "sequence",
            "--rollout-is-mode",
            "truncate",
            "--rollout-is-threshold",
            "1.7",
            "--loss-agg-mode",
            "seq-mean-token-mean",
        ];
        let file = eval_ok(&input, &output, &flags);
        let st = SafeTensors::deserialize(&file).unwrap();
        let cfg = LossConfig {
            mode: PolicyLossMode::KlCov,
            kl_cov_ratio: 0.25,
            ppo_kl_coef: 0.3,
            top_entropy_quantile: Some(0.6),
            rollout_correction: Some(wgpu_policy_loss::RolloutCorrection {
                threshold: 1.7,
                ..wgpu_policy_loss::RolloutCorrection::new(
                    wgpu_policy_loss::RolloutLevel::Sequence,
                    wgpu_policy_loss::RolloutMode::Truncate,
                )
            }),
            loss_agg_mode: wgpu_policy_loss::LossAggMode::SeqMeanTokenMean,
            ..LossConfig::default()
        };
        let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let targets: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let want = reference::policy_loss_with(
            &cfg,
            &reference::Batch {
                logits: &f(&x),
                vocab: v,
                rows_per_seq: s,
                targets: &targets,
                mask: &f(&mask),
                advantages: &f(&adv),
                old_logp: Some(&f(&old)),
                ref_logp: None,
            },
            Some(&f(&roll)),
        )
        .unwrap();
        let close = |name: &str, w: f64| {
            let g = scalar(&st, name) as f64;
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{name}: {g} vs {w}"
            );
        };
        close("loss", want.loss);
        let m = want.metrics;
        close("cov_selected_frac", m.cov_selected_frac);
        close("entropy_mask_frac", m.entropy_mask_frac);
        close("rollout_is_mean", m.rollout_is_mean);
        close("rollout_is_min", m.rollout_is_min);
        close("rollout_is_max", m.rollout_is_max);
        close("rollout_is_clipfrac", m.rollout_is_clipfrac);
        close("rollout_logp_diff_max", m.rollout_logp_diff_max);
        assert!(
            m.cov_selected_frac > 0.0 && m.entropy_mask_frac < 1.0,
            "{m:?}"
        );

        // TRL's names
        for t in ["grpo", "bnpo", "dapo", "cispo", "sapo"] {
            eval_ok(&input, &output, &["--loss-type", t]);
        }
        let dr = ["--loss-type", "dr_grpo", "--max-completion-length", "8"];
        eval_ok(&input, &output, &dr);

        // bad values, each named by its flag
        for (bad, named) in [
            (
                &["--mode", "kl_cov", "--kl-cov-ratio", "0"][..],
                "--kl-cov-ratio",
            ),
            (
                &["--mode", "clip_cov", "--clip-cov-ratio", "1.5"],
                "--clip-cov-ratio",
            ),
            (&["--mode", "sapo", "--tau-neg", "-1"], "--tau-neg"),
            (
                &["--clip-cov-lb", "3", "--clip-cov-ub", "2"],
                "--clip-cov-ub",
            ),
            (
                &[
                    "--rollout-is",
                    "token",
                    "--rollout-is-threshold",
                    "2",
                    "--rollout-is-threshold-lower",
                    "3",
                ],
                "--rollout-is-threshold-lower",
            ),
            (&["--rollout-is-mode", "mask"], "--rollout-is"),
            (&["--top-entropy-quantile", "0"], "--top-entropy-quantile"),
            (&["--top-entropy-renormalize"], "--top-entropy-renormalize"),
            (&["--loss-type", "dr_grpo"], "--max-completion-length"),
        ] {
            let err = eval_fails(&input, bad);
            assert!(err.contains(named), "{bad:?}: {err}");
        }
        // the rollout tensor of the wrong shape, and a rollout level without it
        write(&input, tensors(vec![n]));
        let err = eval_fails(&input, &["--rollout-is", "token"]);
        assert!(err.contains("rollout_logprobs"), "{err}");
        let mut without = tensors(vec![b, s]);
        without.pop();
        write(&input, without);
        let err = eval_fails(&input, &["--rollout-is", "geometric"]);
        assert!(err.contains("--rollout-is"), "{err}");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        // not a safetensors file
        let junk = tmp("junk.safetensors");
        std::fs::write(&junk, b"definitely not safetensors").unwrap();
        let err = eval_fails(&junk, &[]);
        assert!(err.contains("not a safetensors file"), "{err}");
        // a missing file
        let err = eval_fails(std::path::Path::new("/nonexistent/in.safetensors"), &[]);
        assert!(err.contains("cannot read"), "{err}");

        let logits = ("logits", Dtype::F32, vec![2, 3], bytes(&[0.0f32; 6]));
        let targets = ("targets", Dtype::I64, vec![2], bytes(&[0i64, 2]));
        let mask = ("mask", Dtype::F32, vec![2], bytes(&[1.0f32, 1.0]));
        let adv = ("advantages", Dtype::F32, vec![1], bytes(&[1.0f32]));
        // missing tensor
        let e = eval_err(
            vec![logits.clone(), targets.clone(), mask.clone()],
            "missing.safetensors",
        );
        assert!(e.contains("advantages") && e.contains("missing"), "{e}");
        // mis-shaped mask
        let e = eval_err(
            vec![
                logits.clone(),
                targets.clone(),
                ("mask", Dtype::F32, vec![3], bytes(&[1.0f32; 3])),
                adv.clone(),
            ],
            "shape.safetensors",
        );
        assert!(e.contains("mask") && e.contains("shape"), "{e}");
        // wrong dtype
        let e = eval_err(
            vec![
                ("logits", Dtype::I32, vec![2, 3], bytes(&[0i32; 6])),
                targets.clone(),
                mask.clone(),
                adv.clone(),
            ],
            "dtype.safetensors",
        );
        assert!(e.contains("logits") && e.contains("dtype"), "{e}");
        // out-of-range id on a masked-in row
        let e = eval_err(
            vec![
                logits.clone(),
                ("targets", Dtype::I64, vec![2], bytes(&[0i64, 3])),
                mask.clone(),
                adv.clone(),
            ],
            "ids.safetensors",
        );
        assert!(e.contains("targets") && e.contains("row 1"), "{e}");
        // advantages of the wrong length
        let e = eval_err(
            vec![
                logits,
                targets,
                mask,
                ("advantages", Dtype::F32, vec![3], bytes(&[1.0f32; 3])),
            ],
            "adv.safetensors",
        );
        assert!(e.contains("advantages"), "{e}");
    }
}
