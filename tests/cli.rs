//! The binary's contracts, run as a user would.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wgpu-policy-loss"))
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
fn info_fails_without_an_adapter() {
    let out = bin()
        .arg("info")
        .env(
            "WGPU_BACKEND",
            if cfg!(target_os = "macos") {
                "dx12"
            } else {
                "metal"
            },
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no GPU adapter found"));
}
