//! The log-prob primitive (docs/MATH.md#the-log-prob-primitive) on every adapter: `logp`,
//! `H`, `lse` and the vector-Jacobian product for upstream `a`, `b`, `c` against the
//! f64 reference (`reference::sampler`), under temperatures and a softcap, in every
//! dtype; unread rows (all upstream 0, padding targets, junk temperatures) untouched;
//! ppo_clip written on the primitive's outputs against the fused loss; bad input named;
//! the same bits run to run and whatever rows share the call.

mod common;

use common::primitive::{primitive_ref, primitive_ref_with};
use common::tally::Tally;
use common::*;
use wgpu_policy_loss::reference::compare;
use wgpu_policy_loss::reference::sampler::{sampled_row, Sampler};
use wgpu_policy_loss::{
    Context, DType, Error, HostLogProbs, HostLoss, LogProbConfig, LossAggMode, LossConfig,
    PolicyLossMode, RowInput,
};

const V: u32 = 173;
/// The upstream vectors, in the order of `Batch::up`.
const UPSTREAM: [RowInput; 3] = [
    RowInput::UpstreamLogprobs,
    RowInput::UpstreamEntropy,
    RowInput::UpstreamLse,
];
const ROWS: usize = 12;
/// Padding's −100 as the u32 a target buffer holds.
const PAD: u32 = -100i32 as u32;

/// Which upstream vectors a run gives.
#[derive(Clone, Copy, Debug)]
struct Given {
    a: bool,
    b: bool,
    c: bool,
}

/// One batch: logits, targets, temperatures and the three upstream vectors; row 3 and
/// row 8 unread (every upstream value 0), with padding targets and junk temperatures.
struct Batch {
    logits: Vec<f32>,
    targets: Vec<u32>,
    temps: Vec<f32>,
    up: [Vec<f32>; 3],
}

fn batch(seed: u64, given: Given) -> Batch {
    let logits = random_logits(seed, ROWS * V as usize, 2.5);
    let mut targets = random_targets(seed, ROWS, V);
    let mut temps: Vec<f32> = (0..ROWS).map(|r| 0.6 + 0.09 * r as f32).collect();
    let vals = |k: usize, on: bool| -> Vec<f32> {
        (0..ROWS)
            .map(|r| match on {
                true => ((r * 7 + k * 5) % 11) as f32 / 5.0 - 1.0,
                false => 0.0,
            })
            .collect()
    };
    let mut up = [vals(1, given.a), vals(2, given.b), vals(3, given.c)];
    for r in [3, 8] {
        up.iter_mut().for_each(|u| u[r] = 0.0);
        targets[r] = PAD;
        temps[r] = if r == 3 { f32::NAN } else { -1.0 };
    }
    // a row that reads H and lse but not logp: its target may be padding too
    if given.a && (given.b || given.c) {
        up[0][5] = 0.0;
        targets[5] = PAD;
    }
    Batch {
        logits,
        targets,
        temps,
        up,
    }
}

fn host<'a>(b: &'a Batch, l: &'a Logits, given: Given, temps: bool) -> HostLogProbs<'a> {
    HostLogProbs {
        kept: None,
        logits: l.host(),
        vocab: V,
        targets: &b.targets,
        temperatures: temps.then_some(&b.temps[..]),
        upstream_logprobs: given.a.then_some(&b.up[0][..]),
        upstream_entropy: given.b.then_some(&b.up[1][..]),
        upstream_lse: given.c.then_some(&b.up[2][..]),
    }
}

/// Every output against the reference; returns the entries compared.
fn check(
    ctx: &Context,
    cfg: &LogProbConfig,
    (b, l): (&Batch, &Logits),
    given: Given,
    (temps, grad): (bool, DType),
) -> usize {
    let what = format!(
        "{} {} {cfg:?} {given:?} temps {temps} grad {grad}",
        name(ctx),
        l.dtype
    );
    let got = ctx
        .logprobs(cfg, &host(b, l, given, temps), Some(grad))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let x = l.values();
    let g = got.grad.as_ref().expect("a gradient").to_f32();
    let (v, mut n) = (V as usize, 0);
    let mut want_loss = 0.0;
    let tau = |r: usize| if temps { b.temps[r] } else { cfg.temperature } as f64;
    let up = [&b.up[0][..], &b.up[1][..], &b.up[2][..]];
    let sampler = Sampler {
        softcap: cfg.logit_softcap.map(f64::from),
        top_k: cfg.top_k as i64,
        top_p: cfg.top_p as f64,
        min_p: cfg.min_p as f64,
    };
    let want = primitive_ref_with(&x, v, &b.targets, (&tau, sampler), up);
    for (r, row) in want.rows.iter().enumerate() {
        let Some((row, y)) = row else {
            let row = &g[r * v..(r + 1) * v];
            assert!(
                row.iter().all(|&e| e == 0.0),
                "{what}: unread row {r} has a gradient"
            );
            continue;
        };
        let (a, bb, c) = (b.up[0][r] as f64, b.up[1][r] as f64, b.up[2][r] as f64);
        let y = *y;
        let tol = |w: f64| tolerance(w.abs() + 10.0);
        if let Some(y) = y {
            let logp = row.logp(y).unwrap();
            close(got.logprobs[r], logp, tol(logp))
                .unwrap_or_else(|e| panic!("{what}: logp[{r}] {e}"));
            assert!(got.logprobs[r] <= 0.0, "{what}: logp[{r}] > 0");
            want_loss += a * logp;
            n += 1;
        }
        close(got.entropy[r], row.entropy, tol(10.0))
            .unwrap_or_else(|e| panic!("{what}: H[{r}] {e}"));
        close(got.lse[r], row.lse, tol(row.lse)).unwrap_or_else(|e| panic!("{what}: lse[{r}] {e}"));
        want_loss += bb * row.entropy + c * row.lse;
        n += 2;
    }
    let loss = got.metrics.loss;
    close(loss, want_loss, 2e-5 + 2e-5 * want_loss.abs())
        .unwrap_or_else(|e| panic!("{what}: loss {e}"));
    assert_eq!(got.metrics.invalid_input_rows, 0.0, "{what}");
    compare::logits_grad(&g, &want.grad, grad.into())
        .unwrap_or_else(|e| panic!("{what}: grad {e}"));
    n + 1 + g.len()
}

const GIVEN: [Given; 5] = [
    Given {
        a: true,
        b: false,
        c: false,
    },
    Given {
        a: false,
        b: true,
        c: false,
    },
    Given {
        a: false,
        b: false,
        c: true,
    },
    Given {
        a: true,
        b: true,
        c: true,
    },
    Given {
        a: true,
        b: false,
        c: true,
    },
];

/// Each upstream alone and together, under the plain softmax, per-row temperatures and
/// a softcap, in every dtype of logits and gradient (the options cycled).
#[test]
fn the_vjp_and_the_outputs_match_the_reference() {
    let mut tally = Tally::new("primitive entries against the reference");
    for ctx in contexts() {
        let mut n = 0;
        for (i, &given) in GIVEN.iter().enumerate() {
            for j in 0..3 {
                let k = i + j;
                let b = batch(11 + k as u64, given);
                let l = Logits::from_f32(DType::ALL[k % 3], &b.logits);
                let cfg = LogProbConfig {
                    temperature: if j == 1 { 1.0 } else { 0.8 },
                    logit_softcap: (j == 2).then_some(3.0),
                    ..LogProbConfig::default()
                };
                let temps = j == 1 || (j == 2 && i % 2 == 0);
                let cfg = LogProbConfig {
                    temperature: if temps { 1.0 } else { cfg.temperature },
                    ..cfg
                };
                n += check(ctx, &cfg, (&b, &l), given, (temps, DType::ALL[(k + 1) % 3]));
            }
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// Each kept-set rule computed in the kernels (top-k; top-p with per-row temperatures;
/// min-p with the softcap, and all three), every upstream given, read rows' targets
/// among their kept tokens: the outputs and the VJP against the reference.
#[test]
fn computed_kept_sets_match_the_reference() {
    let rules = [
        LogProbConfig {
            top_k: 7,
            ..LogProbConfig::default()
        },
        LogProbConfig {
            top_p: 0.8,
            ..LogProbConfig::default()
        },
        LogProbConfig {
            min_p: 0.05,
            logit_softcap: Some(3.0),
            ..LogProbConfig::default()
        },
        LogProbConfig {
            top_k: 20,
            top_p: 0.9,
            min_p: 0.01,
            ..LogProbConfig::default()
        },
    ];
    let mut tally = Tally::new("primitive entries over computed kept sets");
    for ctx in contexts() {
        let mut n = 0;
        for (i, cfg) in rules.iter().enumerate() {
            let given = GIVEN[GIVEN.len() - 1];
            let mut b = batch(41 + i as u64, given);
            let temps = i % 2 == 1;
            let l = Logits::from_f32(DType::ALL[i % 3], &b.logits);
            let x = l.values();
            let sampler = Sampler {
                softcap: cfg.logit_softcap.map(f64::from),
                top_k: cfg.top_k as i64,
                top_p: cfg.top_p as f64,
                min_p: cfg.min_p as f64,
            };
            let v = V as usize;
            for r in (0..ROWS).filter(|&r| b.up[0][r] != 0.0) {
                let tau = if temps { b.temps[r] as f64 } else { 1.0 };
                let row = sampled_row(&x[r * v..(r + 1) * v], tau, &sampler, None).unwrap();
                let kept: Vec<usize> = (0..v).filter(|&c| row.keep[c]).collect();
                assert!(kept.len() < v, "{cfg:?}: row {r} keeps every token");
                b.targets[r] = kept[r % kept.len()] as u32;
            }
            n += check(ctx, cfg, (&b, &l), given, (temps, DType::ALL[(i + 1) % 3]));
        }
        tally.count(ctx, n);
    }
    tally.finish();
}

/// ppo_clip (token-mean, an entropy bonus) written on the primitive: its log-probs and
/// entropies from one call, `a = ∂L/∂logp` and `b = ∂L/∂H` of the loss computed from
/// them, the gradient from a second call, against the library's fused ppo_clip.
#[test]
fn ppo_clip_written_on_the_primitive_matches_the_fused_loss() {
    let case = LossCase::new(29, 3, 4, V);
    let gamma = 0.01f32;
    let cfg = LossConfig {
        mode: PolicyLossMode::PpoClip,
        loss_agg_mode: LossAggMode::TokenMean,
        entropy_coeff: gamma,
        ..LossConfig::default()
    };
    let l = Logits::from_f32(DType::F32, &case.logits);
    let using = Use {
        per_token_adv: true,
        old: true,
        refp: false,
    };
    let mut tally = Tally::new("ppo_clip on the primitive against the fused loss");
    for ctx in contexts() {
        let fused = ctx
            .policy_loss(&cfg, &case.batch(l.host(), using), Some(DType::F32))
            .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
        let rows = case.rows();
        let ones = vec![1.0f32; rows];
        let ids: Vec<u32> = case.targets.iter().map(|&t| t.min(V - 1)).collect();
        let prim = |a: &[f32], b: &[f32]| -> HostLoss {
            let batch = HostLogProbs {
                kept: None,
                logits: l.host(),
                vocab: V,
                targets: &ids,
                temperatures: None,
                upstream_logprobs: Some(a),
                upstream_entropy: Some(b),
                upstream_lse: None,
            };
            ctx.logprobs(&LogProbConfig::default(), &batch, Some(DType::F32))
                .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)))
        };
        let first = prim(&ones, &ones);
        // L = Σ_r w_r·(−A_r·clip(r_r) − γ·H_r), w = m / Σ m (token-mean): ∂L/∂logp is
        // −w·A·r where the clip leaves r, 0 where it holds it
        let total: f32 = case.mask.iter().sum();
        let (mut a, mut b) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        for r in (0..rows).filter(|&r| case.mask[r] > 0.0) {
            let w = case.mask[r] / total;
            let adv = case.adv_tok[r];
            let ratio = (first.logprobs[r] - case.old[r]).exp();
            let clipped = if adv >= 0.0 { ratio > 1.2 } else { ratio < 0.8 };
            a[r] = if clipped { 0.0 } else { -w * adv * ratio };
            b[r] = -w * gamma;
        }
        let second = prim(&a, &b);
        let (gf, gp) = (fused.grad.unwrap().to_f32(), second.grad.unwrap().to_f32());
        let want: Vec<f64> = gf.iter().map(|&x| x as f64).collect();
        // both are f32 computations of the same sum: the library's rule for an f32
        // gradient against the other holds them within f32 rounding of each other
        compare::logits_grad(&gp, &want, DType::F32.into())
            .unwrap_or_else(|e| panic!("{}: {e}", name(ctx)));
        tally.count(ctx, gp.len());
    }
    tally.finish();
}

/// Bad input: the host form's errors name the tensor and the first bad row; no
/// upstream at all, or one of the wrong length, names it; a padding target is an
/// error only where `a ≠ 0`.
#[test]
fn bad_input_is_named() {
    let given = Given {
        a: true,
        b: true,
        c: true,
    };
    let b = batch(41, given);
    let l = Logits::from_f32(DType::F32, &b.logits);
    let cfg = LogProbConfig::default();
    let mut tally = Tally::new("bad inputs named");
    for ctx in contexts() {
        for (k, tensor) in UPSTREAM.into_iter().enumerate() {
            for bad in [f32::NAN, f32::INFINITY] {
                let mut up = b.up.clone();
                up[k][6] = bad;
                let mut h = host(&b, &l, given, false);
                let arr = [&up[0][..], &up[1][..], &up[2][..]];
                (h.upstream_logprobs, h.upstream_entropy, h.upstream_lse) =
                    (Some(arr[0]), Some(arr[1]), Some(arr[2]));
                match ctx.logprobs(&cfg, &h, None) {
                    Err(Error::InvalidInput {
                        tensor: t, row: 6, ..
                    }) if t == tensor => {}
                    other => panic!("{}: {tensor:?} = {bad}: {other:?}", name(ctx)),
                }
                tally.count(ctx, 1);
            }
        }
        // a padding target where a ≠ 0
        let mut t = b.targets.clone();
        t[7] = PAD;
        let mut h = host(&b, &l, given, false);
        h.targets = &t;
        match ctx.logprobs(&cfg, &h, None) {
            Err(Error::TargetOutOfRange { row: 7, .. }) => {}
            other => panic!("{}: padding where a ≠ 0: {other:?}", name(ctx)),
        }
        let mut none = host(&b, &l, given, false);
        (
            none.upstream_logprobs,
            none.upstream_entropy,
            none.upstream_lse,
        ) = (None, None, None);
        assert_arg(ctx.logprobs(&cfg, &none, None), "upstream");
        let mut short = host(&b, &l, given, false);
        short.upstream_lse = Some(&b.up[2][..ROWS - 1]);
        assert_arg(ctx.logprobs(&cfg, &short, None), "upstream_lse");
        let hot = LogProbConfig {
            temperature: 0.5,
            ..cfg
        };
        assert_arg(
            ctx.logprobs(&hot, &host(&b, &l, given, true), None),
            "temperature",
        );
        tally.count(ctx, 4);
    }
    tally.finish();
}

fn assert_arg<T: std::fmt::Debug>(r: wgpu_policy_loss::Result<T>, want: &str) {
    match r {
        Err(Error::InvalidArgument { arg, .. }) if arg == want => {}
        other => panic!("expected an error naming `{want}`, got {other:?}"),
    }
}

/// The same bits run to run, and a row's bits whatever rows share the call.
#[test]
fn the_same_bits_whatever_the_batch() {
    let given = Given {
        a: true,
        b: true,
        c: true,
    };
    let b = batch(53, given);
    let l = Logits::from_f32(DType::Bf16, &b.logits);
    let cfg = LogProbConfig {
        temperature: 1.0,
        logit_softcap: Some(5.0),
        ..LogProbConfig::default()
    };
    let mut tally = Tally::new("primitive runs bitwise equal");
    for ctx in contexts() {
        let run = |h: &HostLogProbs<'_>| ctx.logprobs(&cfg, h, Some(DType::F32)).unwrap();
        let whole = run(&host(&b, &l, given, true));
        assert!(
            same_bits(&whole, &run(&host(&b, &l, given, true))),
            "{}",
            name(ctx)
        );
        // the last 5 rows alone
        let (from, v) = (ROWS - 5, V as usize);
        let tail = Logits::from_f32(DType::Bf16, &b.logits[from * v..]);
        let mut h = host(&b, &tail, given, true);
        h.targets = &b.targets[from..];
        h.temperatures = Some(&b.temps[from..]);
        (h.upstream_logprobs, h.upstream_entropy, h.upstream_lse) = (
            Some(&b.up[0][from..]),
            Some(&b.up[1][from..]),
            Some(&b.up[2][from..]),
        );
        let part = run(&h);
        for r in 0..5 {
            if b.up[0][from + r] != 0.0 {
                assert_eq!(
                    part.logprobs[r].to_bits(),
                    whole.logprobs[from + r].to_bits()
                );
            }
            assert_eq!(
                part.lse[r].to_bits(),
                whole.lse[from + r].to_bits(),
                "{}",
                name(ctx)
            );
        }
        let (gw, gp) = (whole.grad.unwrap().bytes, part.grad.unwrap().bytes);
        assert_eq!(
            gp,
            gw[from * v * 4..],
            "{}: the tail rows' gradient",
            name(ctx)
        );
        tally.count(ctx, 3);
    }
    tally.finish();
}

/// The device form with no host check: a NaN or ±inf upstream value on a read row
/// makes that row NaN, and the metrics name the primitive's tensor, the row and the
/// value (a's sign as given).
#[test]
fn the_device_form_counts_and_names_bad_upstream_values() {
    use wgpu_policy_loss::{
        F32View, Gradient, LogProbInputs, LogProbs, LossBuffers, Metrics, Upstream,
    };
    use wgpu_policy_loss::{LogitsView, TargetsView};
    let given = Given {
        a: true,
        b: true,
        c: true,
    };
    let mut tally = Tally::new("bad upstream values counted on the device");
    for ctx in contexts() {
        for (k, tensor) in UPSTREAM.into_iter().enumerate() {
            let mut b = batch(61, given);
            b.up[k][6] = f32::NEG_INFINITY;
            let up = |i: usize| ctx.upload("upstream", bytemuck::cast_slice(&b.up[i]));
            let (a, bb, c) = (up(0), up(1), up(2));
            let x = ctx.upload("logits", bytemuck::cast_slice(&b.logits));
            let y = ctx.upload("targets", bytemuck::cast_slice(&b.targets));
            let inputs = LogProbInputs {
                kept: None,
                logits: LogitsView::new(&x, DType::F32, ROWS as u32, V),
                targets: TargetsView::new(&y),
                temperatures: None,
                upstream: Upstream {
                    logprobs: Some(F32View::new(&a)),
                    entropy: Some(F32View::new(&bb)),
                    lse: Some(F32View::new(&c)),
                },
            };
            let prim = LogProbs::new(ctx, LogProbConfig::default()).unwrap();
            let out = LossBuffers::new(ctx, ROWS as u32);
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            prim.record(&mut enc, &inputs, Gradient::InPlace, &out.outputs())
                .unwrap();
            let got = ctx
                .read_back(enc, &[(&out.metrics, Metrics::LEN as u64 * 4)])
                .unwrap();
            let m = Metrics::from_slice(&bytemuck::pod_collect_to_vec::<u8, f32>(&got[0]));
            assert_eq!(m.invalid_input_rows, 1.0, "{}: {tensor:?}", name(ctx));
            match LogProbs::check(&m, V) {
                Err(Error::InvalidInput {
                    tensor: t,
                    row: 6,
                    value,
                }) => {
                    assert_eq!((t, value), (tensor, f32::NEG_INFINITY), "{}", name(ctx));
                }
                other => panic!("{}: {tensor:?}: {other:?}", name(ctx)),
            }
            tally.count(ctx, 1);
        }
    }
    tally.finish();
}

/// The primitive from hidden states and the lm-head weight: logp, H, lse, ∂L/∂h and
/// ∂L/∂W against the reference (its logits `h·Wᵀ`, its VJP, and the head's chain
/// rule), bf16 and f32, with chunks that do not divide the rows.
#[test]
fn the_head_form_matches_the_reference() {
    use common::head::{check_grad, HeadCase};
    use wgpu_policy_loss::reference::{head_grads, head_logits, head_magnitudes};
    use wgpu_policy_loss::HostLogProbsHead;
    let given = Given {
        a: true,
        b: true,
        c: true,
    };
    let mut tally = Tally::new("primitive head calls against the reference");
    for ctx in contexts() {
        for (k, dtype) in [DType::Bf16, DType::F32].into_iter().enumerate() {
            let hc = HeadCase::new(71 + k as u64, (3, 4, V, 24), dtype);
            let b = batch(72 + k as u64, given);
            let cfg = LogProbConfig {
                temperature: 1.0,
                logit_softcap: (k == 0).then_some(4.0),
                ..LogProbConfig::default()
            };
            let batch = HostLogProbsHead {
                kept: None,
                hidden: hc.hidden.host(),
                lm_head: hc.lm_head.host(),
                hidden_dim: hc.h,
                targets: &b.targets,
                temperatures: Some(&b.temps),
                upstream_logprobs: Some(&b.up[0]),
                upstream_entropy: Some(&b.up[1]),
                upstream_lse: Some(&b.up[2]),
                chunk_rows: Some(5),
            };
            let what = format!("{} {dtype} {cfg:?}", name(ctx));
            let got = ctx
                .logprobs_head(&cfg, &batch, Some(dtype))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (hidden, w) = (hc.hidden.values(), hc.lm_head.values());
            let x = head_logits(&hidden, &w, hc.h as usize);
            let v = V as usize;
            let tau = |r: usize| b.temps[r] as f64;
            let up = [&b.up[0][..], &b.up[1][..], &b.up[2][..]];
            let softcap = cfg.logit_softcap.map(f64::from);
            let want = primitive_ref(&x, v, &b.targets, (&tau, softcap), up);
            let (gz, read) = (&want.grad, &want.read);
            for (r, row) in want.rows.iter().enumerate() {
                let Some((row, y)) = row else { continue };
                if let Some(y) = *y {
                    let logp = row.logp(y).unwrap();
                    close(got.loss.logprobs[r], logp, tolerance(logp.abs() + 10.0))
                        .unwrap_or_else(|e| panic!("{what}: logp[{r}] {e}"));
                }
                close(got.loss.lse[r], row.lse, tolerance(row.lse.abs() + 10.0))
                    .unwrap_or_else(|e| panic!("{what}: lse[{r}] {e}"));
            }
            let (dh, dw) = head_grads(gz, &hidden, &w, hc.h as usize, read);
            let (sh, sw) = head_magnitudes(gz, &hidden, &w, hc.h as usize, read);
            let gz_max = compare::largest_finite(gz);
            check_grad(
                &format!("{what}: grad_hidden"),
                got.grad_hidden.as_ref().unwrap(),
                &dh,
                (v, gz_max, &sh),
            );
            check_grad(
                &format!("{what}: grad_lm_head"),
                got.grad_lm_head.as_ref().unwrap(),
                &dw,
                (ROWS, gz_max, &sw),
            );
            tally.count(ctx, 1);
        }
    }
    tally.finish();
}
