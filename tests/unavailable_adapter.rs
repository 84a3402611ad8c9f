//! An adapter that is listed but cannot open a device (NVIDIA's GL adapter on a
//! headless driver answers "Parent device is lost") is printed and skipped, and the
//! tests run on the others; strict mode makes it fatal; no adapter opening at all is a
//! loud failure. The refusal is simulated with `WGPU_POLICY_LOSS_FAIL_DEVICE`, in a
//! child run of this test binary so that the variable reaches no other test.

mod common;

use std::process::{Command, Output};

use wgpu_policy_loss::{describe_info, FAIL_DEVICE_ENV, STRICT_ENV};

/// What every GPU test does first, and one loss against the reference on each
/// adapter that opened: a refusal must not keep the others from being checked.
#[test]
fn harness_target() {
    let case = common::LossCase::new(3, 2, 5, 37);
    let cfg = wgpu_policy_loss::LossConfig::default();
    for ctx in common::contexts() {
        common::check_loss(
            ctx,
            &cfg,
            &case,
            wgpu_policy_loss::DType::F32,
            Some(wgpu_policy_loss::DType::F32),
            common::ALL_INPUTS,
        );
    }
}

fn run_harness(env: &[(&str, &str)]) -> (Output, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "harness_target", "--test-threads=1"])
        .env_remove(FAIL_DEVICE_ENV)
        .env_remove(STRICT_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

#[test]
fn a_refusing_adapter_is_printed_and_skipped() {
    let labels: Vec<String> = wgpu_policy_loss::adapters()
        .iter()
        .map(|a| describe_info(&a.get_info()))
        .collect();
    assert!(!labels.is_empty(), "no GPU adapter found");
    // an adapter whose label names no other one: refusing it leaves the rest running
    let lone = labels.iter().find(|l| {
        labels
            .iter()
            .filter(|o| o.to_lowercase().contains(&l.to_lowercase()))
            .count()
            == 1
    });
    match lone {
        Some(label) if labels.len() > 1 => {
            let (out, text) = run_harness(&[(FAIL_DEVICE_ENV, label)]);
            assert!(
                out.status.success(),
                "one refusing adapter failed the tests:\n{text}"
            );
            assert!(
                text.contains(&format!("SKIPPED adapter {label}"))
                    && text.contains("refused on purpose"),
                "the skipped adapter was not printed with its reason:\n{text}"
            );
            // strict mode: any refusal fails, naming the adapter
            let (out, text) = run_harness(&[(FAIL_DEVICE_ENV, label), (STRICT_ENV, "1")]);
            assert!(!out.status.success(), "strict mode passed:\n{text}");
            assert!(
                text.contains(label.split(" (").next().unwrap()) && text.contains(STRICT_ENV),
                "{text}"
            );
        }
        _ => common::skipped_part(
            "one adapter refusing among others: one adapter here (or only look-alikes)",
        ),
    }
    // every adapter refuses: nothing ran, so the tests fail and say why
    let (out, text) = run_harness(&[(FAIL_DEVICE_ENV, "(")]);
    assert!(
        !out.status.success(),
        "the tests passed with no adapter open:\n{text}"
    );
    assert!(
        text.contains("no GPU adapter found that opens a device") && text.contains(&labels[0]),
        "the failure does not say why:\n{text}"
    );
}
