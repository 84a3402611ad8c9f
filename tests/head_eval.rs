//! `eval` with `hidden` and `lm_head` (the CLI contract of the fused head,
//! docs/MATH.md#the-eval-command) and `bench --head`, against the f64 reference on the
//! default adapter.
#![cfg(feature = "cli")]

mod common;

use common::head::*;
use common::*;
use wgpu_policy_loss::reference::{compare, head_grads, head_logits, head_magnitudes};
use wgpu_policy_loss::{DType, LossConfig};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-head-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn dtype_of(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::BF16,
    }
}

/// The input file of `hc` as `[B, S, H]` hidden, with `extra` tensors (or without
/// those named in `drop`).
fn write_input(
    path: &std::path::Path,
    hc: &HeadCase,
    extra: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    drop: &[&str],
) {
    let c = &hc.case;
    let (b, s) = (c.seqs as usize, c.rows_per_seq as usize);
    let (v, h) = (c.vocab as usize, hc.h as usize);
    let ids: Vec<i64> = c.targets.iter().map(|&t| t as i64).collect();
    let mut t: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
        (
            "hidden",
            dtype_of(hc.hidden.dtype),
            vec![b, s, h],
            hc.hidden.bytes().to_vec(),
        ),
        (
            "lm_head",
            dtype_of(hc.lm_head.dtype),
            vec![v, h],
            hc.lm_head.bytes().to_vec(),
        ),
        (
            "targets",
            Dtype::I64,
            vec![b, s],
            bytemuck::cast_slice(&ids).to_vec(),
        ),
        (
            "mask",
            Dtype::F32,
            vec![b, s],
            bytemuck::cast_slice(&c.mask).to_vec(),
        ),
        (
            "advantages",
            Dtype::F32,
            vec![b],
            bytemuck::cast_slice(&c.adv_seq).to_vec(),
        ),
        (
            "old_logprobs",
            Dtype::F32,
            vec![b, s],
            bytemuck::cast_slice(&c.old).to_vec(),
        ),
    ];
    t.retain(|x| !drop.contains(&x.0));
    t.extend(extra.iter().cloned());
    let views: Vec<(String, TensorView<'_>)> = t
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn fails(input: &std::path::Path, flags: &[&str], named: &str) {
    let out = common::eval(input, &tmp("never.safetensors"), flags);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{flags:?} was accepted");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(named),
        "{flags:?}: the error does not name {named}: {err}"
    );
}

fn grad_of(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap();
    let d = t.data();
    let v = match t.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec(d),
        Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, wgpu_policy_loss::half::bf16>(d)
            .iter()
            .map(|x| x.to_f32())
            .collect(),
        Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, wgpu_policy_loss::half::f16>(d)
            .iter()
            .map(|x| x.to_f32())
            .collect(),
        other => panic!("{name} has dtype {other:?}"),
    };
    (t.shape().to_vec(), v)
}

#[test]
fn eval_takes_hidden_and_lm_head() {
    let hc = HeadCase::new(5, (2, 9, 203, 24), DType::Bf16);
    let c = &hc.case;
    let input = tmp("head.safetensors");
    write_input(&input, &hc, &[], &[]);
    let cfg = LossConfig {
        clip_ratio_c: Some(3.0),
        ..LossConfig::default()
    };
    let x = head_logits(&hc.hidden.values(), &hc.lm_head.values(), hc.h as usize);
    let using = Use {
        per_token_adv: false,
        old: true,
        refp: false,
    };
    let want = c.reference(&cfg, &x, using, false);
    let mask: Vec<f64> = c.mask.iter().map(|&m| m as f64).collect();
    let (hidden, lm_head) = (hc.hidden.values(), hc.lm_head.values());
    let (dh, dw) = head_grads(&want.grad, &hidden, &lm_head, hc.h as usize, &mask);
    let (sh, sw) = head_magnitudes(&want.grad, &hidden, &lm_head, hc.h as usize, &mask);
    let gz_max = compare::largest_finite(&want.grad);
    for (flags, gd) in [
        (
            &["--head-chunk", "4", "--clip-ratio-c", "3"][..],
            DType::F32,
        ),
        (
            &["--grad-dtype", "bf16", "--clip-ratio-c", "3"],
            DType::Bf16,
        ),
        (
            &[
                "--head-chunk",
                "100",
                "--grad-dtype",
                "f16",
                "--clip-ratio-c",
                "3",
            ],
            DType::F16,
        ),
    ] {
        let output = tmp("head-out.safetensors");
        let out = common::eval(&input, &output, flags);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&output).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let loss: f32 = bytemuck::pod_read_unaligned(st.tensor("loss").unwrap().data());
        close(loss, want.loss, 5e-5 + 5e-5 * want.loss.abs()).unwrap();
        assert!(
            st.tensor("grad_logits").is_err(),
            "{flags:?}: grad_logits written"
        );
        for (name, t) in st.tensors() {
            assert!(
                t.shape() != [2, 9, 203] && t.shape() != [18, 203],
                "{name} is [T, V]"
            );
        }
        assert_eq!(st.tensor("logprobs").unwrap().shape(), [2, 9]);
        let (shape, gh) = grad_of(&st, "grad_hidden");
        assert_eq!(shape, [2, 9, 24]);
        let (shape, gw) = grad_of(&st, "grad_lm_head");
        assert_eq!(shape, [203, 24]);
        let host = |v: Vec<f32>| {
            let bytes = match gd {
                DType::F32 => bytemuck::cast_slice(&v).to_vec(),
                DType::F16 => bytemuck::cast_slice(
                    &v.iter()
                        .map(|&x| wgpu_policy_loss::half::f16::from_f32(x))
                        .collect::<Vec<_>>(),
                )
                .to_vec(),
                DType::Bf16 => bytemuck::cast_slice(
                    &v.iter()
                        .map(|&x| wgpu_policy_loss::half::bf16::from_f32(x))
                        .collect::<Vec<_>>(),
                )
                .to_vec(),
            };
            wgpu_policy_loss::HostGrad { dtype: gd, bytes }
        };
        let (v, rows) = (c.vocab as usize, c.rows());
        check_grad(
            &format!("{flags:?} grad_hidden"),
            &host(gh),
            &dh,
            (v, gz_max, &sh),
        );
        check_grad(
            &format!("{flags:?} grad_lm_head"),
            &host(gw),
            &dw,
            (rows, gz_max, &sw),
        );
    }
}

/// `bench --head`: the memory columns at the shapes, and a small shape timed
/// fused and unfused side by side.
#[test]
fn bench_head_reports_memory_and_times() {
    let out = common::bin()
        .args(["bench", "--head", "--memory-only", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let qwen = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rows"] == 4096 && r["vocab"] == 151936)
        .expect("the 4096 x 896 x 151936 row");
    let (f, u) = (
        qwen["fused_bytes"].as_u64().unwrap(),
        qwen["unfused_bytes"].as_u64().unwrap(),
    );
    assert!(8 * f <= u, "fused {f} B, unfused {u} B");
    let out = common::bin()
        .args([
            "bench",
            "--head",
            "--head-shape",
            "40x16x300:bf16",
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
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("40x16x300 bf16") && text.contains("GFLOP/s"),
        "{text}"
    );
}

#[test]
fn eval_names_bad_head_input() {
    let hc = HeadCase::new(6, (2, 4, 33, 8), DType::F32);
    let p = tmp("bad.safetensors");
    let logits = vec![0u8; 2 * 4 * 33 * 4];
    write_input(
        &p,
        &hc,
        &[("logits", Dtype::F32, vec![2, 4, 33], logits.clone())],
        &[],
    );
    fails(&p, &[], "logits");
    write_input(&p, &hc, &[], &["lm_head"]);
    fails(&p, &[], "lm_head");
    write_input(&p, &hc, &[], &["hidden"]);
    fails(&p, &[], "hidden");
    write_input(
        &p,
        &hc,
        &[("hidden", Dtype::F32, vec![64], vec![0; 256])],
        &["hidden"],
    );
    fails(&p, &[], "hidden");
    write_input(
        &p,
        &hc,
        &[("lm_head", Dtype::F32, vec![33, 9], vec![0; 33 * 9 * 4])],
        &["lm_head"],
    );
    fails(&p, &[], "lm_head");
    let bf = vec![0u8; 33 * 8 * 2];
    write_input(
        &p,
        &hc,
        &[("lm_head", Dtype::BF16, vec![33, 8], bf)],
        &["lm_head"],
    );
    fails(&p, &[], "lm_head");
    write_input(&p, &hc, &[], &[]);
    fails(&p, &["--head-chunk", "0"], "--head-chunk");
    fails(&p, &["--parts", "2"], "--parts");
    fails(&p, &["--vocab-shards", "2"], "--vocab-shards");
    // a masked-in id outside [0, V): its row, the id and V
    let mut ids: Vec<i64> = hc.case.targets.iter().map(|&t| t as i64).collect();
    let row = (0..ids.len()).find(|&r| hc.case.mask[r] > 0.0).unwrap();
    ids[row] = 33;
    write_input(
        &p,
        &hc,
        &[(
            "targets",
            Dtype::I64,
            vec![2, 4],
            bytemuck::cast_slice(&ids).to_vec(),
        )],
        &["targets"],
    );
    fails(&p, &[], "33");
    let l = tmp("logits.safetensors");
    write_input(
        &l,
        &hc,
        &[("logits", Dtype::F32, vec![2, 4, 33], logits)],
        &["hidden", "lm_head"],
    );
    fails(&l, &["--head-chunk", "4"], "--head-chunk");
}
