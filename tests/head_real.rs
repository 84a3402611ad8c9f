//! Qwen2.5-7B's head at its real size: V = 152064, H = 3584, bf16 hidden states and
//! weight (1.09 GB), 4 rows. ∂L/∂W's f32 sum behind a bf16 ∂L/∂W is 2.18 GB, as is an
//! f32 ∂L/∂W: more than Mesa's largest buffer (2 GiB). Through the library (the host
//! API; the device API with ∂L/∂W in blocks of the caller's) and through `eval`, with
//! bf16 and f32 gradients, against the f64 reference: the loss and metrics, every
//! row's log-prob and entropy, every row of ∂L/∂h, and ∂L/∂W's rows on either side of
//! every multiple of 128 (every block the library cuts starts on one; the device API's
//! blocks' own edges too) and a random sample.
#![cfg(feature = "cli")]

mod common;

use std::time::Instant;

use common::head::*;
use common::*;
use rand::RngExt;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgpu_policy_loss::half::bf16;
use wgpu_policy_loss::reference::LossOutput;
use wgpu_policy_loss::wgpu::{self, BufferUsages};
use wgpu_policy_loss::{
    Context, DType, HeadGradients, HostHeadLoss, LossBuffers, LossConfig, MatrixView, PolicyLoss,
    VocabBlocks,
};

const V: u32 = 152_064;
const H: u32 = 3584;
const ROWS: u32 = 4;
/// The device API's ∂L/∂W blocks: none on a multiple of 128.
const USER_BLOCKS: [u32; 3] = [50_000, 50_001, 52_063];

/// `n` bf16 values `scale · (u₁ + u₂ + u₃ + u₄)`, uᵢ uniform in [-1, 1) from a hash of
/// the index (normal-ish, as tests/common's, and fast enough for 545 M of them).
fn bf16s(seed: u64, n: usize, scale: f32) -> Vec<bf16> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i ^ seed.rotate_left(32)).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u: f32 = (0..4)
                .map(|k| ((z >> (16 * k)) & 0xffff) as f32 / 32768.0 - 1.0)
                .sum();
            bf16::from_f32(u * scale)
        })
        .collect()
}

fn bf16_logits(v: Vec<bf16>) -> Logits {
    Logits {
        dtype: DType::Bf16,
        f32: Vec::new(),
        f16: Vec::new(),
        bf16: v,
    }
}

/// The rows of ∂L/∂W compared: either side of every multiple of 128 and of the
/// device API's block edges, the last, and 200 drawn at random.
fn sample_rows() -> Vec<usize> {
    let mut rows: Vec<usize> = (0..=V as usize / 128)
        .flat_map(|k| [(128 * k).saturating_sub(1), 128 * k])
        .collect();
    let mut edge = 0;
    for n in USER_BLOCKS {
        rows.extend([edge, edge + n as usize - 1]);
        edge += n as usize;
    }
    let mut r = rng(91);
    rows.extend((0..200).map(|_| r.random_range(0..V as usize)));
    rows.push(V as usize - 1);
    rows.retain(|&v| v < V as usize);
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// The reference: the loss and, per row, ∂L/∂h; ∂L/∂W's rows of [`sample_rows`].
struct Want {
    out: LossOutput,
    dh: Vec<f64>,
    rows: Vec<usize>,
    dw: Vec<Vec<f64>>,
}

fn config() -> LossConfig {
    LossConfig {
        clip_ratio_c: Some(3.0),
        ..LossConfig::default()
    }
}

const USING: Use = Use {
    per_token_adv: false,
    old: true,
    refp: false,
};

fn reference(hc: &HeadCase) -> Want {
    let c = &hc.case;
    let x = logits_by_blocks(&hc.hidden, &hc.lm_head, H as usize);
    let out = c.reference(&config(), &x, USING, false);
    let mask: Vec<f64> = c.mask.iter().map(|&m| m as f64).collect();
    let rows = sample_rows();
    let (dh, dw) = grads_by_blocks(
        &out.grad,
        (&hc.hidden, &hc.lm_head, H as usize),
        &mask,
        &rows,
    );
    Want { out, dh, rows, dw }
}

/// Row v of a run's ∂L/∂W, widened.
type RowOf<'a> = &'a dyn Fn(usize) -> Vec<f32>;

/// One run's results against the reference; its largest errors, for the report.
fn check(
    what: &str,
    hc: &HeadCase,
    want: &Want,
    (metrics, logprobs, entropy): (&wgpu_policy_loss::Metrics, &[f32], &[f32]),
    (dh, (dtype, dw)): (&[f32], (DType, RowOf<'_>)),
) -> String {
    let w = &want.out;
    // the host path's tolerances (tests/common/head.rs, check_head)
    let tol = |x: f64| 5e-5 + 5e-5 * x.abs();
    for (label, g, x) in [
        ("loss", metrics.loss, w.loss),
        ("pg_clipfrac", metrics.pg_clipfrac, w.metrics.pg_clipfrac),
        ("ppo_kl", metrics.ppo_kl, w.metrics.ppo_kl),
        ("entropy_mean", metrics.entropy_mean, w.metrics.entropy_mean),
    ] {
        close(g, x, tol(x)).unwrap_or_else(|e| panic!("{what}: {label}: {e}"));
    }
    let c = &hc.case;
    let mut worst_row = 0.0f64;
    for r in (0..c.rows()).filter(|&r| c.mask[r] > 0.0) {
        let e = close(logprobs[r], w.logp[r], tolerance(w.logp[r].abs() + 10.0))
            .unwrap_or_else(|e| panic!("{what}: logprobs[{r}]: {e}"));
        let f = close(entropy[r], w.entropy[r], tolerance(10.0))
            .unwrap_or_else(|e| panic!("{what}: entropy[{r}]: {e}"));
        worst_row = worst_row.max(e).max(f);
    }
    // ∂L/∂h in f32 or in ∂L/∂W's dtype: within the tolerance of the coarser
    let (eh, sh) = check_values(&format!("{what}: grad_hidden"), dtype, dh, &want.dh);
    let got_w: Vec<f32> = want.rows.iter().flat_map(|&v| dw(v)).collect();
    let want_w: Vec<f64> = want.dw.iter().flatten().copied().collect();
    let (ew, sw) = check_values(&format!("{what}: grad_lm_head"), dtype, &got_w, &want_w);
    format!(
        "loss {:.3e} off; log-prob/entropy ≤ {worst_row:.2e}; ∂h ≤ {eh:.2e} (max |∂h| {sh:.2e}); \
         ∂W ({} rows) ≤ {ew:.2e} (max |∂W| {sw:.2e})",
        (metrics.loss as f64 - w.loss).abs(),
        want.rows.len()
    )
}

/// The rows of a `[V, H]` gradient of `dtype` in `bytes`, widened.
fn row_of(bytes: &[u8], dtype: DType, v: usize) -> Vec<f32> {
    let n = H as usize * dtype.size() as usize;
    let b = &bytes[v * n..(v + 1) * n];
    wgpu_policy_loss::HostGrad {
        dtype,
        bytes: b.to_vec(),
    }
    .to_f32()
}

fn host_run(ctx: &Context, hc: &HeadCase, want: &Want, dtype: DType) {
    let t = Instant::now();
    let got: HostHeadLoss = ctx
        .policy_loss_head(&config(), &hc.host(USING, false, None), Some(dtype))
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    let secs = t.elapsed().as_secs_f64();
    let what = format!("{} host API, {dtype} gradients", name(ctx));
    let gh = got.grad_hidden.as_ref().unwrap().to_f32();
    let gw = got.grad_lm_head.as_ref().unwrap();
    assert_eq!(gw.bytes.len(), (V * H) as usize * dtype.size() as usize);
    let l = &got.loss;
    let report = check(
        &what,
        hc,
        want,
        (&l.metrics, &l.logprobs, &l.entropy),
        (&gh, (dtype, &|v| row_of(&gw.bytes, dtype, v))),
    );
    eprintln!("{what}: {secs:.1} s; {report}");
}

/// The device API: W in one buffer, ∂L/∂W in [`USER_BLOCKS`], a buffer each.
fn device_run(ctx: &Context, hc: &HeadCase, want: &Want, dtype: DType) {
    let c = &hc.case;
    let t = Instant::now();
    let buf = |bytes: &[u8]| ctx.upload("t", bytes);
    let (hid, w) = (buf(hc.hidden.bytes()), buf(hc.lm_head.bytes()));
    let per_row = c.upload_rows(ctx);
    let usage = BufferUsages::STORAGE | BufferUsages::COPY_SRC;
    let size = |rows: u32| (rows as u64 * H as u64 * dtype.size()).div_ceil(4) * 4;
    let gh = ctx.buffer("gh", ROWS as u64 * H as u64 * 4, usage);
    let gw: Vec<wgpu::Buffer> = USER_BLOCKS
        .iter()
        .map(|&n| ctx.buffer("gw", size(n), usage))
        .collect();
    let views: Vec<MatrixView<'_>> = gw
        .iter()
        .zip(USER_BLOCKS)
        .map(|(b, n)| MatrixView::new(b, dtype, n, H))
        .collect();
    // one sequence of ROWS rows
    let inputs = per_row.head_inputs(
        MatrixView::new(&hid, DType::Bf16, ROWS, H),
        MatrixView::new(&w, DType::Bf16, V, H),
        ROWS,
    );
    let grads = HeadGradients {
        hidden: Some(MatrixView::new(&gh, DType::F32, ROWS, H)),
        lm_head: Some(VocabBlocks::Blocks(&views)),
    };
    let loss = PolicyLoss::new(ctx, config()).unwrap();
    let out = LossBuffers::new(ctx, ROWS);
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record_head(&mut enc, &inputs, &grads, &out.outputs())
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    let mut list = vec![
        (&out.metrics, wgpu_policy_loss::Metrics::LEN as u64 * 4),
        (&out.logprobs, ROWS as u64 * 4),
        (&out.entropy, ROWS as u64 * 4),
        (&gh, ROWS as u64 * H as u64 * 4),
    ];
    list.extend(gw.iter().zip(USER_BLOCKS).map(|(b, n)| (b, size(n))));
    let got = ctx.read_back(enc, &list).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let f32s = |b: &[u8]| bytemuck::pod_collect_to_vec::<u8, f32>(b);
    let metrics = wgpu_policy_loss::Metrics::from_slice(&f32s(&got[0]));
    let what = format!(
        "{} device API, {dtype} ∂W in blocks {USER_BLOCKS:?}",
        name(ctx)
    );
    let block_of = |v: usize| {
        let mut first = 0;
        for (i, n) in USER_BLOCKS.iter().enumerate() {
            if v < first + *n as usize {
                return row_of(&got[4 + i], dtype, v - first);
            }
            first += *n as usize;
        }
        unreachable!("row {v} is outside V")
    };
    let report = check(
        &what,
        hc,
        want,
        (&metrics, &f32s(&got[1]), &f32s(&got[2])),
        (&f32s(&got[3]), (dtype, &block_of)),
    );
    eprintln!("{what}: {secs:.1} s; {report}");
}

/// The input file of `hc` for `eval`, its tensors borrowed (no copy of W).
fn write_input(path: &std::path::Path, hc: &HeadCase) {
    let c = &hc.case;
    let ids: Vec<i64> = c.targets.iter().map(|&t| t as i64).collect();
    let t = [
        (
            "hidden",
            Dtype::BF16,
            vec![1, ROWS as usize, H as usize],
            hc.hidden.bytes(),
        ),
        (
            "lm_head",
            Dtype::BF16,
            vec![V as usize, H as usize],
            hc.lm_head.bytes(),
        ),
        (
            "targets",
            Dtype::I64,
            vec![1, ROWS as usize],
            bytemuck::cast_slice(&ids),
        ),
        (
            "mask",
            Dtype::F32,
            vec![1, ROWS as usize],
            bytemuck::cast_slice(&c.mask),
        ),
        (
            "advantages",
            Dtype::F32,
            vec![1],
            bytemuck::cast_slice(&c.adv_seq),
        ),
        (
            "old_logprobs",
            Dtype::F32,
            vec![1, ROWS as usize],
            bytemuck::cast_slice(&c.old),
        ),
    ];
    let views: Vec<(String, TensorView<'_>)> = t
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn eval_run(ctx: &Context, input: &std::path::Path, hc: &HeadCase, want: &Want, dtype: DType) {
    let output = input.with_file_name("out.safetensors");
    let t = Instant::now();
    let flags = [
        "--adapter",
        &ctx.describe(),
        "--grad-dtype",
        dtype.name(),
        "--clip-ratio-c",
        "3",
    ];
    let out = common::eval(input, &output, &flags);
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: eval {flags:?}: {err}", name(ctx));
    let bytes = std::fs::read(&output).unwrap();
    std::fs::remove_file(&output).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| bytemuck::pod_collect_to_vec::<u8, f32>(st.tensor(n).unwrap().data());
    let mut metrics = wgpu_policy_loss::Metrics::from_slice(&[0.0; wgpu_policy_loss::Metrics::LEN]);
    for (n, slot) in [
        ("loss", &mut metrics.loss),
        ("pg_clipfrac", &mut metrics.pg_clipfrac),
        ("ppo_kl", &mut metrics.ppo_kl),
        ("entropy_mean", &mut metrics.entropy_mean),
    ] {
        *slot = f32s(n)[0];
    }
    let gw = st.tensor("grad_lm_head").unwrap();
    assert_eq!(gw.shape(), [V as usize, H as usize]);
    let gh = st.tensor("grad_hidden").unwrap();
    let gh = wgpu_policy_loss::HostGrad {
        dtype,
        bytes: gh.data().to_vec(),
    }
    .to_f32();
    let what = format!("{} eval, --grad-dtype {dtype}", name(ctx));
    let report = check(
        &what,
        hc,
        want,
        (&metrics, &f32s("logprobs"), &f32s("entropy")),
        (&gh, (dtype, &|v| row_of(gw.data(), dtype, v))),
    );
    eprintln!("{what}: {secs:.1} s (the process: reading, upload, run, writing); {report}");
}

/// Qwen2.5-7B's head on every adapter: the host API, the device API with ∂L/∂W in
/// blocks, and `eval`, with bf16 and f32 gradients.
#[test]
#[ignore = "minutes on a CPU adapter and about 8 GB of memory: run with --release -- --ignored"]
fn qwen2_5_7b_head_at_its_real_size() {
    let t = Instant::now();
    let hidden = bf16_logits(bf16s(1, (ROWS * H) as usize, 0.5));
    let lm_head = bf16_logits(bf16s(2, V as usize * H as usize, 2.0 / (H as f32).sqrt()));
    let hc = HeadCase::from_matrices(92, (1, ROWS), H, hidden, lm_head);
    let want = reference(&hc);
    eprintln!(
        "inputs and the f64 reference: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let dir = std::env::temp_dir().join(format!("wgpu-policy-loss-real-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.safetensors");
    write_input(&input, &hc);
    for ctx in &opened() {
        for dtype in [DType::Bf16, DType::F32] {
            host_run(ctx, &hc, &want, dtype);
            device_run(ctx, &hc, &want, dtype);
            eval_run(ctx, &input, &hc, &want, dtype);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
