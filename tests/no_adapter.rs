//! A machine without an adapter must make the GPU tests fail loudly, never pass
//! silently, and the library must say why.

mod common;

use std::process::Command;

/// A backend this platform's wgpu build does not have, so selecting it finds nothing.
const ABSENT_BACKEND: &str = if cfg!(target_os = "macos") {
    "dx12"
} else {
    "metal"
};

/// Touches the adapters the way every GPU test does.
#[test]
fn harness_target() {
    assert!(!common::contexts().is_empty());
}

#[test]
fn gpu_tests_fail_loudly_without_an_adapter() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "harness_target", "--test-threads=1"])
        .env("WGPU_BACKEND", ABSENT_BACKEND)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a GPU test passed with no adapter:\n{text}"
    );
    assert!(
        text.contains("no GPU adapter found"),
        "the failure does not say why:\n{text}"
    );
}

#[test]
fn library_reports_no_adapter() {
    let err = wgpu_policy_loss::Context::adapter_named("no-such-adapter-xyz").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, wgpu_policy_loss::Error::NoAdapter(_)),
        "{msg}"
    );
    assert!(
        msg.contains("no-such-adapter-xyz") && msg.contains("adapters present"),
        "{msg}"
    );
}
