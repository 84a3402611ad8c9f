#![cfg(feature = "cli")]
//! The binary's flags as a user types them: the names `--adapter` takes, `bench`'s
//! modes excluding one another, one JSON row shape for every mode, progress on stderr
//! only, the demo's titled plot, and the no-adapter hint of this platform.

mod common;

use std::process::Output;

use common::bin;
use serde_json::Value;
use wgpu_policy_loss::{adapters, describe_info, wgpu, Context};

/// The smallest `bench` run: one tiny shape, one sample, no progress.
const TINY: [&str; 9] = [
    "bench",
    "--json",
    "--quiet",
    "--shape",
    "8x100",
    "--samples",
    "1",
    "--seconds",
    "0",
];

fn text(out: &Output) -> (String, String) {
    let s = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (s(&out.stdout), s(&out.stderr))
}

/// The adapters of `bench --adapter NAME` (its JSON rows), or its error.
fn bench_on(name: &str) -> Result<Vec<String>, String> {
    let out = bin().args(TINY).args(["--adapter", name]).output().unwrap();
    let (stdout, stderr) = text(&out);
    if !out.status.success() {
        return Err(stderr);
    }
    let rows: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));
    let rows = rows.as_array().unwrap();
    Ok(rows
        .iter()
        .map(|r| r["adapter"].as_str().unwrap().to_string())
        .collect())
}

/// `--adapter name` picks `expected` (the first adapter `fits` takes, in `info`'s
/// order), or, with none here, fails naming the adapters present.
fn picks(name: &str, fits: impl Fn(&wgpu::AdapterInfo) -> bool) {
    let all = adapters();
    let expected = all.iter().find(|a| fits(&a.get_info()));
    match (bench_on(name), expected) {
        (Ok(used), Some(a)) => {
            let label = describe_info(&a.get_info());
            assert!(
                !used.is_empty() && used.iter().all(|u| *u == label),
                "`--adapter {name}` ran on {used:?}, not {label}"
            );
        }
        // listed but refusing a device (a headless driver's GL): the error names it
        (Err(e), Some(a)) if Context::from_adapter(a).is_err() => {
            let label = describe_info(&a.get_info());
            assert!(e.contains(&label), "`--adapter {name}`: {e}");
        }
        (Err(e), None) => {
            assert!(
                e.contains(&format!("no GPU adapter found matching `{name}`"))
                    && e.contains("adapters present"),
                "{e}"
            );
            common::skipped_part(format!("`--adapter {name}`: no such adapter here"));
        }
        (got, expected) => panic!(
            "`--adapter {name}`: {got:?}, expected {:?}",
            expected.map(|a| describe_info(&a.get_info()))
        ),
    }
}

#[test]
fn adapter_takes_backends_lavapipe_and_names() {
    use wgpu::Backend;
    let llvmpipe = |i: &wgpu::AdapterInfo| i.name.to_lowercase().contains("llvmpipe");
    picks("lavapipe", |i| i.backend == Backend::Vulkan && llvmpipe(i));
    picks("vulkan", |i| i.backend == Backend::Vulkan);
    picks("gl", |i| i.backend == Backend::Gl);
    picks("OpenGL", |i| i.backend == Backend::Gl);
    // a part of the name, case-insensitive: the first adapter holding it
    let first = adapters()
        .first()
        .map(|a| a.get_info())
        .expect("no adapter");
    let part = first.name.to_uppercase();
    picks(&part, |i| describe_info(i).to_uppercase().contains(&part));
}

#[test]
fn a_bad_adapter_name_lists_the_adapters_present() {
    let labels: Vec<String> = adapters()
        .iter()
        .map(|a| describe_info(&a.get_info()))
        .collect();
    for sub in [
        &["bench"][..],
        &["check"],
        &["demo", "--quiet", "--steps", "1"],
    ] {
        let out = bin()
            .args(sub)
            .args(["--adapter", "no-such-gpu-xyz"])
            .output()
            .unwrap();
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{sub:?} passed: {err}");
        assert!(
            err.contains("no GPU adapter found matching `no-such-gpu-xyz`")
                && err.contains("adapters present:"),
            "{sub:?}: {err}"
        );
        for l in &labels {
            assert!(err.contains(l.as_str()), "{sub:?}: {l} missing from: {err}");
        }
    }
    // a backend that this machine lacks says which backend it looked for
    let absent = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let err = bench_on(absent).unwrap_err();
    assert!(err.contains("backend; adapters present"), "{err}");
}

#[test]
fn every_adapter_help_states_the_rule() {
    for sub in ["bench", "check", "demo", "eval"] {
        let out = bin().args([sub, "--help"]).output().unwrap();
        let (help, _) = text(&out);
        assert!(out.status.success(), "{sub} --help: {help}");
        let line = help
            .split("--adapter")
            .nth(1)
            .unwrap_or_else(|| panic!("{sub}: no --adapter in:\n{help}"));
        for key in [
            "vulkan, gl",
            "lavapipe",
            "case-insensitive",
            "first in the order `info`",
        ] {
            assert!(line.contains(key), "{sub}: `{key}` missing from:\n{line}");
        }
    }
}

/// `bench` with `args` must fail as clap does (exit 2), its message holding `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let out = bin().arg("bench").args(args).output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "bench {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "bench {args:?}: `{n}` missing from: {err}");
    }
}

#[test]
fn bench_modes_exclude_one_another() {
    let modes: [&[&str]; 5] = [
        &["--head"],
        &["--vocab-shards", "2"],
        &["--families"],
        &["--stages"],
        &["--sampler"],
    ];
    for (i, a) in modes.iter().enumerate() {
        for b in &modes[i + 1..] {
            let args = [*a, *b].concat();
            refused(&args, &["cannot be used with", a[0], b[0]]);
        }
    }
    let required = "the following required arguments were not provided";
    refused(&["--memory-only"], &[required, "--head", "--memory-only"]);
    refused(
        &["--head-shape", "8x16x32"],
        &[required, "--head", "--head-shape"],
    );
    refused(
        &["--stages", "--memory-only"],
        &["cannot be used with", "--memory-only"],
    );
    refused(
        &["--sampler", "--head-shape", "8x16x32"],
        &["cannot be used with", "--head-shape"],
    );
    // the head has shapes of its own
    refused(
        &["--head", "--shape", "8x100"],
        &["cannot be used with", "--shape"],
    );
    refused(&["--head", "--large"], &["cannot be used with", "--large"]);
}

/// Every row of `bench --json` plus `args`: a shape that runs and one that cannot.
fn json_rows(args: &[&str]) -> Vec<Value> {
    let out = bin()
        .args([
            "bench",
            "--json",
            "--quiet",
            "--samples",
            "1",
            "--seconds",
            "0",
        ])
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench {args:?}: {stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));
    v.as_array().unwrap().clone()
}

fn keys(row: &Value) -> Vec<String> {
    let mut k: Vec<String> = row.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn bench_json_has_one_row_shape_in_every_mode() {
    let loss = ["--shape", "8x100", "--shape", "1x4294967295:f32"];
    let with = |mode: &[&'static str]| [mode, &loss[..]].concat();
    let head = [
        "--head",
        "--head-shape",
        "16x32x64:f32",
        // 8 GB a row of f32 logits: beyond any device's binding
        "--head-shape",
        "1x8x2000000000",
    ];
    // each mode, its flags, and a time every row that ran has
    for (mode, args, time) in [
        ("loss", loss.to_vec(), "fused_ms"),
        ("stages", with(&["--stages"]), "fused_ms"),
        ("families", with(&["--families"]), "fused_ms"),
        ("vocab_shards", with(&["--vocab-shards", "2"]), "sharded_ms"),
        ("sampler", with(&["--sampler"]), "fused_ms"),
        ("head", head.to_vec(), "fused_ms"),
    ] {
        let rows = json_rows(&args);
        let first = keys(&rows[0]);
        let (mut ran, mut skipped) = (0, 0);
        for r in &rows {
            assert_eq!(r["mode"], mode, "{r}");
            assert_eq!(
                keys(r),
                first,
                "{mode}: rows of two shapes:\n{r}\n{}",
                rows[0]
            );
            for k in [
                "adapter", "paths", "rows", "vocab", "dtype", "gpu_time", "skipped",
            ] {
                assert!(r.get(k).is_some(), "{mode}: no `{k}` in {r}");
            }
            match r["skipped"].as_str() {
                Some(why) => {
                    skipped += 1;
                    assert!(!why.is_empty(), "{mode}: a skipped row without its reason");
                    assert!(r["gpu_time"].is_null() && r[time].is_null(), "{r}");
                }
                None => {
                    ran += 1;
                    assert!(r[time].as_f64().is_some_and(|t| t > 0.0), "{r}");
                }
            }
        }
        assert!(
            ran > 0 && skipped > 0,
            "{mode}: {ran} ran, {skipped} skipped"
        );
    }
}

#[test]
fn progress_goes_to_stderr_and_quiet_silences_it() {
    let run = |quiet: bool| {
        let mut cmd = bin();
        cmd.args([
            "bench", "--json", "--shape", "64x1000", "--shape", "64x2000",
        ])
        .args(["--samples", "3", "--seconds", "0.2"])
        .env("WGPU_POLICY_LOSS_PROGRESS_SECS", "0.05");
        if quiet {
            cmd.arg("--quiet");
        }
        let out = cmd.output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        // stdout stays one JSON document
        let rows: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{stdout}"));
        assert!(!rows.as_array().unwrap().is_empty());
        stderr
    };
    let err = run(false);
    let line = err
        .lines()
        .find(|l| l.starts_with("bench: ") && l.contains(" shapes, "))
        .unwrap_or_else(|| panic!("no progress line in:\n{err}"));
    assert!(line.contains("/2 shapes") && line.contains(" s"), "{line}");
    let err = run(true);
    assert!(
        !err.contains(" shapes, "),
        "--quiet printed progress:\n{err}"
    );
}

#[test]
fn demo_progress_and_titled_plot() {
    let plot = common::tmp_path("flags-demo", "reward.svg");
    let out = bin()
        .args(["demo", "--steps", "12", "--seed", "5", "--mode", "gspo"])
        .args(["--adapter", "vulkan"])
        .arg("--plot")
        .arg(&plot)
        .env("WGPU_POLICY_LOSS_PROGRESS_SECS", "0.01")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    if !out.status.success() && stderr.contains("no GPU adapter found matching `vulkan`") {
        common::skipped_part("the demo on Vulkan: no Vulkan adapter here");
        return;
    }
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("demo: ") && l.contains("/12 steps, ")),
        "no progress line in:\n{stderr}"
    );
    assert!(
        !stdout.contains("/12 steps"),
        "progress on stdout:\n{stdout}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    let vulkan = adapters()
        .into_iter()
        .find(|a| a.get_info().backend == wgpu::Backend::Vulkan)
        .map(|a| describe_info(&a.get_info()))
        .unwrap();
    for key in ["gspo", "group size 16", "seed 5", vulkan.as_str()] {
        assert!(
            svg.contains(key),
            "`{key}` missing from the plot's title:\n{svg}"
        );
    }
    let _ = std::fs::remove_file(&plot);
}

#[test]
fn no_adapter_hint_fits_the_platform() {
    let absent = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let out = bin()
        .arg("info")
        .env("WGPU_BACKEND", absent)
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    let hint = if cfg!(target_os = "linux") {
        "apt-get install mesa-vulkan-drivers"
    } else if cfg!(target_os = "macos") {
        "Metal ships with macOS"
    } else if cfg!(target_os = "windows") {
        "GPU's driver (DX12 or Vulkan)"
    } else {
        "Vulkan or OpenGL ES driver"
    };
    assert!(
        err.contains("no GPU adapter found") && err.contains(hint),
        "{err}"
    );
}
