//! The fused head where one buffer cannot hold what it needs, on every adapter opened
//! with a largest buffer of 256 KiB and bindings of 64 KiB: the `V × H` f32 sum behind
//! a 16-bit ∂L/∂W, an f32 ∂L/∂W and an f32 W are held in vocabulary blocks, through
//! the host API and through the device API ([`VocabBlocks`]), against the f64
//! reference; what nothing can cut is an error naming the argument and the sizes.
//! (At Qwen2.5-7B's size, through `eval` too: tests/head_real.rs.)

mod common;

use common::head::*;
use common::*;
use wgpu_policy_loss::reference::{head_grads, head_logits};
use wgpu_policy_loss::wgpu::{self, BufferUsages};
use wgpu_policy_loss::{
    Advantages, Context, DType, F32View, HeadGradients, HeadInputs, KlEstimator, LossAggMode,
    LossBuffers, LossConfig, MatrixView, PolicyLoss, PolicyLossMode, RowLayout, TargetsView,
    VocabBlocks,
};

const LARGEST: u64 = 256 << 10;
const BINDING: u64 = 64 << 10;
/// V × H f32 is 480 KB: more than the largest buffer, as Qwen2.5-7B's 2.18 GB are more
/// than the 2 GiB of Mesa's; a row of f32 logits (12 KB) fits a binding 5 times.
const V: u32 = 3000;
const H: u32 = 40;

/// Every adapter, with a largest buffer of 256 KiB and bindings of 64 KiB.
fn small() -> Vec<Context> {
    opened()
        .iter()
        .map(|full| {
            let a = full.adapter().expect("opened on an adapter");
            let limits = wgpu::Limits {
                max_buffer_size: LARGEST,
                max_storage_buffer_binding_size: BINDING,
                ..a.limits()
            };
            Context::from_adapter_with_limits(a, limits)
                .unwrap_or_else(|e| panic!("{}: {e}", name(full)))
        })
        .collect()
}

fn gspo() -> LossConfig {
    loss_config(
        PolicyLossMode::Gspo,
        LossAggMode::SeqMeanTokenMean,
        KlEstimator::K3,
        (1.0, 0.0, 0.0, None),
    )
}

/// The host API: ∂L/∂W's f32 sum behind a bf16 ∂L/∂W in two buffers of the scratch,
/// an f32 ∂L/∂W in two blocks read back whole, an f32 W uploaded in two blocks (with
/// GSPO's statistics pass making each chunk's logits twice); chunks of 5 and 3 rows
/// summed into every block.
#[test]
fn the_host_api_holds_in_blocks_what_one_buffer_cannot() {
    assert!(V as u64 * H as u64 * 4 > LARGEST);
    let bf = HeadCase::new(81, (2, 10, V, H), DType::Bf16);
    let f32 = HeadCase::new(82, (2, 10, V, H), DType::F32);
    for ctx in &small() {
        for grad in [DType::Bf16, DType::F32] {
            check_head(ctx, &ppo(), &bf, Some(grad), None, (ALL_INPUTS, false));
        }
        check_head(
            ctx,
            &gspo(),
            &f32,
            Some(DType::F32),
            Some(3),
            (ALL_INPUTS, false),
        );
    }
}

/// One block of ∂L/∂W as a device test lays it out: its rows, the buffer it lies in,
/// its first element there, and its sequences (rows each, stride) where they lie apart.
struct Block {
    rows: u32,
    buffer: usize,
    at: u64,
    seqs: Option<(u32, u64)>,
}

impl Block {
    fn dense(rows: u32, buffer: usize, at: u64) -> Self {
        Block {
            rows,
            buffer,
            at,
            seqs: None,
        }
    }

    fn layout(&self) -> RowLayout {
        let (rps, seq_stride) = self.seqs.unwrap_or((u32::MAX, 0));
        RowLayout {
            offset: self.at,
            row_stride: H as u64,
            rows_per_seq: rps,
            seq_stride,
        }
    }
}

/// What one call through the device API gave: the loss, ∂L/∂h and ∂L/∂W (f32, dense).
struct Got {
    loss: f32,
    dh: Vec<f32>,
    dw: Vec<f32>,
}

/// `hc` through [`PolicyLoss::record_head`] with W in blocks of `w_rows` rows (a
/// buffer each) and ∂L/∂W in `blocks` of `dtype` over buffers of `sizes` bytes.
fn run_blocks(
    ctx: &Context,
    cfg: &LossConfig,
    hc: &HeadCase,
    w_rows: &[u32],
    (dtype, blocks, sizes): (DType, &[Block], &[u64]),
) -> Got {
    let c = &hc.case;
    let rows = c.rows() as u32;
    let wd = hc.hidden.dtype;
    let buf = |bytes: &[u8]| ctx.upload("t", bytes);
    let hid = buf(hc.hidden.bytes());
    let mut at = 0usize;
    let w_bufs: Vec<wgpu::Buffer> = w_rows
        .iter()
        .map(|&n| {
            let len = (n * H) as usize * wd.size() as usize;
            at += len;
            buf(&hc.lm_head.bytes()[at - len..at])
        })
        .collect();
    let per_row = c.upload_rows(ctx);
    let usage = BufferUsages::STORAGE | BufferUsages::COPY_SRC;
    let gh = ctx.buffer("gh", (rows * H) as u64 * 4, usage);
    let g_bufs: Vec<wgpu::Buffer> = sizes.iter().map(|&n| ctx.buffer("gw", n, usage)).collect();
    let w: Vec<MatrixView<'_>> = w_bufs
        .iter()
        .zip(w_rows)
        .map(|(b, &n)| MatrixView::new(b, wd, n, H))
        .collect();
    let gw: Vec<MatrixView<'_>> = blocks
        .iter()
        .map(|b| MatrixView {
            buffer: &g_bufs[b.buffer],
            dtype,
            rows: b.rows,
            cols: H,
            layout: b.layout(),
        })
        .collect();
    let hidden = MatrixView::new(&hid, wd, rows, H)
        .with_sequences(c.rows_per_seq, (c.rows_per_seq * H) as u64);
    let inputs = per_row
        .head_inputs(hidden, VocabBlocks::Blocks(&w), c.rows_per_seq)
        .with_ref_logprobs(F32View::new(&per_row.refp))
        .with_chunk_rows(7);
    let grads = HeadGradients {
        hidden: Some(MatrixView::new(&gh, DType::F32, rows, H)),
        lm_head: Some(VocabBlocks::Blocks(&gw)),
    };
    let loss = PolicyLoss::new(ctx, *cfg).unwrap();
    let out = LossBuffers::new(ctx, rows);
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record_head(&mut enc, &inputs, &grads, &out.outputs())
        .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
    let mut list = vec![(&out.metrics, 4), (&gh, (rows * H) as u64 * 4)];
    list.extend(g_bufs.iter().zip(sizes).map(|(b, &n)| (b, n)));
    let got = ctx.read_back(enc, &list).unwrap();
    let bufs: Vec<Vec<f32>> = got[2..]
        .iter()
        .map(|b| {
            wgpu_policy_loss::HostGrad {
                dtype,
                bytes: b.clone(),
            }
            .to_f32()
        })
        .collect();
    let mut dw = Vec::with_capacity((V * H) as usize);
    for b in blocks {
        let l = b.layout();
        for j in 0..b.rows as u64 {
            let e = l.row_start(j) as usize;
            dw.extend_from_slice(&bufs[b.buffer][e..e + H as usize]);
        }
    }
    Got {
        loss: f32::from_le_bytes(got[0][..4].try_into().unwrap()),
        dh: bytemuck::pod_collect_to_vec(&got[1]),
        dw,
    }
}

/// `got` against the reference of `hc` under `cfg`.
fn check_got(what: &str, cfg: &LossConfig, hc: &HeadCase, dtype: DType, got: &Got) {
    let c = &hc.case;
    let x = head_logits(&hc.hidden.values(), &hc.lm_head.values(), H as usize);
    let want = c.reference(cfg, &x, ALL_INPUTS, false);
    // the loss to the host path's tolerance (tests/common/head.rs)
    close(got.loss, want.loss, 5e-5 + 5e-5 * want.loss.abs())
        .unwrap_or_else(|e| panic!("{what}: loss: {e}"));
    let mask: Vec<f64> = c.mask.iter().map(|&m| m as f64).collect();
    let (dh, dw) = head_grads(
        &want.grad,
        &hc.hidden.values(),
        &hc.lm_head.values(),
        H as usize,
        &mask,
    );
    check_values(&format!("{what}: grad_hidden"), DType::F32, &got.dh, &dh);
    check_values(&format!("{what}: grad_lm_head"), dtype, &got.dw, &dw);
}

/// The device API: W in two blocks of their own; an f32 ∂L/∂W in three uneven blocks
/// (none ending on a matmul tile, one a single row, two in one buffer, the first in
/// sequences apart: summed in the scratch, rounded into its rows, beside blocks summed
/// in place); a bf16 ∂L/∂W in two blocks (its sum in three buffers).
#[test]
fn the_device_api_takes_the_weight_and_its_gradient_in_blocks() {
    let hc = HeadCase::new(83, (2, 10, V, H), DType::Bf16);
    let gap = 500 * H as u64 + 16;
    let f32_blocks = [
        Block {
            rows: 1500,
            buffer: 0,
            at: 0,
            seqs: Some((500, gap)),
        },
        Block::dense(1, 1, 0),
        Block::dense(1499, 1, H as u64),
    ];
    let f32_sizes = [(2 * gap + 500 * H as u64) * 4, 1500 * H as u64 * 4];
    let bf_blocks = [Block::dense(700, 0, 0), Block::dense(2300, 1, 0)];
    let bf_sizes = [700 * H as u64 * 2, 2300 * H as u64 * 2];
    assert!(f32_sizes.iter().chain(&bf_sizes).all(|&n| n <= LARGEST));
    for ctx in &small() {
        for cfg in [ppo(), gspo()] {
            let what = format!("{} {:?}", name(ctx), cfg.mode);
            let got = run_blocks(
                ctx,
                &cfg,
                &hc,
                &[1234, 1766],
                (DType::F32, &f32_blocks, &f32_sizes),
            );
            check_got(&format!("{what} f32 blocks"), &cfg, &hc, DType::F32, &got);
            let got = run_blocks(ctx, &cfg, &hc, &[V], (DType::Bf16, &bf_blocks, &bf_sizes));
            check_got(&format!("{what} bf16 blocks"), &cfg, &hc, DType::Bf16, &got);
        }
    }
}

/// What cannot be cut into blocks and does not fit is an `Err` naming the argument and
/// the sizes, before anything is allocated: hidden states (or host logits) larger than
/// the largest buffer, a row of f32 logits larger than a binding.
#[test]
fn what_no_buffer_can_hold_is_an_error_naming_it() {
    for ctx in &small() {
        let expect = |err: String, arg: &str, sizes: &[u64]| {
            assert!(err.contains(&format!("`{arg}`")), "{}: {err}", name(ctx));
            for n in sizes {
                assert!(
                    err.contains(&n.to_string()),
                    "{}: {err} (no {n})",
                    name(ctx)
                );
            }
        };
        // [2000, 40] f32 hidden states: 320000 bytes
        let tall = HeadCase::new(84, (1, 2000, 8, H), DType::F32);
        let before = ctx.allocations();
        let err = ctx
            .policy_loss_head(
                &ppo(),
                &tall.host(ALL_INPUTS, false, None),
                Some(DType::F32),
            )
            .unwrap_err()
            .to_string();
        expect(err, "hidden", &[320_000, LARGEST]);
        assert_eq!(ctx.allocations(), before, "{}: allocated", name(ctx));
        // a row of 20000 f32 logits: 80000 bytes, more than a binding
        let wide = HeadCase::new(85, (1, 2, 20_000, 2), DType::Bf16);
        let err = ctx
            .policy_loss_head(
                &ppo(),
                &wide.host(ALL_INPUTS, false, None),
                Some(DType::Bf16),
            )
            .unwrap_err()
            .to_string();
        expect(err, "lm_head", &[80_000, BINDING]);
        assert_eq!(ctx.allocations(), before, "{}: allocated", name(ctx));
        // [100, 1000] f32 logits through the logits path: 400000 bytes
        let case = LossCase::new(86, 1, 100, 1000);
        let logits = Logits::from_f32(DType::F32, &case.logits);
        let err = ctx
            .policy_loss(
                &ppo(),
                &case.batch(logits.host(), ALL_INPUTS),
                Some(DType::F32),
            )
            .unwrap_err()
            .to_string();
        expect(err, "logits", &[400_000, LARGEST]);
        assert_eq!(ctx.allocations(), before, "{}: allocated", name(ctx));
    }
}

/// Blocks that do not make a `[V, H]` matrix are errors naming the argument and the
/// block.
#[test]
fn bad_blocks_are_errors_naming_the_block() {
    let ctx = &contexts()[0];
    let (rows, v) = (6u32, 50u32);
    let usage = BufferUsages::STORAGE | BufferUsages::COPY_SRC | BufferUsages::COPY_DST;
    let buf = |n: u64| ctx.buffer("t", n, usage);
    let (hid, w, y, m, a) = (buf(960), buf(4000), buf(24), buf(24), buf(24));
    let (gh, g0, g1) = (buf(4000), buf(8000), buf(8000));
    let bf = DType::Bf16;
    let w_view = MatrixView::new(&w, bf, v, H);
    let inputs = HeadInputs::new(
        MatrixView::new(&hid, bf, rows, H),
        w_view,
        TargetsView::new(&y),
        F32View::new(&m),
        Advantages::PerToken(F32View::new(&a)),
    );
    let loss = PolicyLoss::new(ctx, LossConfig::default()).unwrap();
    let out = LossBuffers::new(ctx, rows);
    let run = |inputs: &HeadInputs<'_>, blocks: &[MatrixView<'_>]| {
        let grads = HeadGradients {
            hidden: Some(MatrixView::new(&gh, DType::F32, rows, H)),
            lm_head: Some(VocabBlocks::Blocks(blocks)),
        };
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        loss.record_head(&mut enc, inputs, &grads, &out.outputs())
            .unwrap_err()
            .to_string()
    };
    let f = DType::F32;
    let at = |b, rows, offset| MatrixView {
        layout: RowLayout {
            offset,
            ..MatrixView::new(b, f, rows, H).layout
        },
        ..MatrixView::new(b, f, rows, H)
    };
    let cases: Vec<(Vec<MatrixView<'_>>, &str)> = vec![
        (vec![], "no blocks"),
        (vec![at(&g0, 20, 0), at(&g1, 20, 0)], "hold 40 rows"),
        (
            vec![at(&g0, 25, 0), MatrixView::new(&g1, f, 25, 39)],
            "block 1: has 39 columns",
        ),
        (
            vec![at(&g0, 25, 0), MatrixView::new(&g1, bf, 25, H)],
            "block 1: is bf16",
        ),
        (
            vec![at(&g0, 25, 0), at(&g0, 25, 24 * H as u64)],
            "block 1 overlaps block 0",
        ),
        (
            vec![at(&g0, 25, 0), at(&g1, 0, 0), at(&g1, 25, 0)],
            "block 1: needs at least one row",
        ),
        (vec![at(&g0, 25, 0), at(&gh, 25, 0)], "grad_hidden"),
        (vec![at(&g0, 25, 0), at(&w, 25, 0)], "the input `lm_head`"),
    ];
    for (blocks, says) in &cases {
        let err = run(&inputs, blocks);
        assert!(
            err.contains("`grad_lm_head`") && err.contains(says),
            "{says}: {err}"
        );
    }
    // two blocks side by side in one buffer are fine
    let fine = [at(&g0, 25, 0), at(&g0, 25, 25 * H as u64)];
    let grads = HeadGradients {
        hidden: None,
        lm_head: Some(VocabBlocks::Blocks(&fine)),
    };
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    loss.record_head(&mut enc, &inputs, &grads, &out.outputs())
        .unwrap();
    // W's blocks: in hidden's dtype
    let w_blocks = [
        MatrixView::new(&w, bf, 30, H),
        MatrixView::new(&g1, f, 20, H),
    ];
    let mixed = HeadInputs {
        lm_head: VocabBlocks::Blocks(&w_blocks),
        ..inputs
    };
    let err = run(&mixed, &fine);
    assert!(
        err.contains("`lm_head`") && err.contains("block 1"),
        "{err}"
    );
}
