//! The f64 reference under the sampler's distribution
//! (docs/MATH.md#the-samplers-distribution): every mode's loss over kept sets, with a
//! softcap and per-token temperatures, against central differences of the reference's
//! own loss; the plain loss where every option is off; the bad-input table of
//! docs/MATH.md#bad-input. No GPU: these check the reference the kernels will be held
//! to.

use wgpu_policy_loss::reference::sampler::{KeptSets, Sampler, SamplerBatch};
use wgpu_policy_loss::reference::{policy_loss_sampled, policy_loss_with, Batch};
use wgpu_policy_loss::{Error, KlEstimator, LossAggMode, LossConfig, PolicyLossMode};

const ROWS: usize = 6;
const V: usize = 9;

/// Two sequences of three rows; row 4 masked out (its id out of every set).
struct Data {
    x: Vec<f64>,
    y: Vec<u32>,
    mask: Vec<f64>,
    adv: Vec<f64>,
    old: Vec<f64>,
    refp: Vec<f64>,
    temps: Vec<f64>,
}

fn data() -> Data {
    let x: Vec<f64> = (0..ROWS * V)
        .map(|i| ((i as f64 * 0.731).sin() * 2.3 + (i as f64 * 0.137).cos()) * 1.1)
        .collect();
    Data {
        x,
        y: vec![2, 7, 0, 5, 99, 3],
        mask: vec![1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
        adv: vec![0.8, -1.3],
        old: vec![-2.1, -1.7, -2.6, -1.9, -2.0, -2.4],
        refp: vec![-2.0, -1.5, -2.9, -2.2, -2.0, -2.1],
        temps: vec![0.7, 1.0, 1.3, 0.9, -1.0, 1.1],
    }
}

fn batch<'a>(d: &'a Data, x: &'a [f64]) -> Batch<'a> {
    Batch {
        logits: x,
        vocab: V,
        rows_per_seq: 3,
        targets: &d.y,
        mask: &d.mask,
        advantages: &d.adv,
        old_logp: Some(&d.old),
        ref_logp: Some(&d.refp),
    }
}

fn config(mode: PolicyLossMode) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: LossAggMode::TokenMean,
        kl_coef: 0.05,
        kl_loss_type: KlEstimator::K3,
        entropy_coeff: 0.01,
        ..LossConfig::default()
    }
}

/// Row r keeps these ids (row 2's set is empty: every token; row 5 keeps its target
/// alone).
fn kept_sets() -> (Vec<u32>, Vec<u32>) {
    let sets: [&[u32]; ROWS] = [
        &[2, 0, 4, 8],
        &[7, 1, 3],
        &[],
        &[5, 6, 2, 1, 0],
        &[0, 1],
        &[3],
    ];
    let mut offsets = vec![0u32];
    let mut ids = Vec::new();
    for s in sets {
        ids.extend_from_slice(s);
        offsets.push(ids.len() as u32);
    }
    (offsets, ids)
}

/// Central differences of the reference's loss against its gradient, every element.
fn check_gradient(cfg: &LossConfig, d: &Data, s: &SamplerBatch<'_>, what: &str) {
    let loss = |x: &[f64]| policy_loss_sampled(cfg, &batch(d, x), None, s).unwrap();
    let out = loss(&d.x);
    assert!(out.loss.is_finite(), "{what}: loss {}", out.loss);
    let h = 1e-6;
    for i in 0..ROWS * V {
        let (mut up, mut down) = (d.x.clone(), d.x.clone());
        up[i] += h;
        down[i] -= h;
        let want = (loss(&up).loss - loss(&down).loss) / (2.0 * h);
        assert!(
            (out.grad[i] - want).abs() < 1e-7,
            "{what}: element {i} (row {}, id {}): {} vs {want}",
            i / V,
            i % V,
            out.grad[i]
        );
    }
}

/// The loss over kept sets is the plain loss at τ = 1 of `z` with −∞ outside each
/// row's set (e^{−∞} = 0: the same lse, p and entropy), and its gradient that loss's
/// gradient times dz/dx = σ'/τ (the chain rule): a check of every mode, detached
/// gradients included, by a computation that never forms a kept set.
fn check_as_plain_loss(cfg: &LossConfig, d: &Data, s: &SamplerBatch<'_>, what: &str) {
    let b = batch(d, &d.x);
    let rows = s.rows(&b, cfg.temperature as f64).unwrap();
    let z: Vec<f64> = rows
        .iter()
        .flat_map(|r| (0..V).map(|v| if r.keep[v] { r.z[v] } else { f64::NEG_INFINITY }))
        .collect();
    let plain_cfg = LossConfig {
        temperature: 1.0,
        ..*cfg
    };
    let want = policy_loss_with(&plain_cfg, &batch(d, &z), None).unwrap();
    let got = policy_loss_sampled(cfg, &b, None, s).unwrap();
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
    assert!(
        near(got.loss, want.loss),
        "{what}: loss {} vs {}",
        got.loss,
        want.loss
    );
    for r in (0..ROWS).filter(|&r| d.mask[r] > 0.0) {
        assert!(near(got.logp[r], want.logp[r]), "{what}: logp[{r}]");
        assert!(near(got.lse[r], want.lse[r]), "{what}: lse[{r}]");
        assert!(
            near(got.entropy[r], want.entropy[r]),
            "{what}: entropy[{r}]"
        );
        for v in 0..V {
            let i = r * V + v;
            let chained = if rows[r].keep[v] {
                want.grad[i] * rows[r].dz[v]
            } else {
                0.0
            };
            assert!(
                near(got.grad[i], chained),
                "{what}: grad row {r} id {v}: {} vs {chained}",
                got.grad[i]
            );
        }
    }
}

#[test]
fn every_mode_over_given_sets_with_softcap_and_temperatures_has_its_gradient() {
    let d = data();
    let (offsets, ids) = kept_sets();
    let s = SamplerBatch {
        sampler: Sampler {
            softcap: Some(3.0),
            ..Sampler::default()
        },
        temperatures: Some(&d.temps),
        keep: Some(KeptSets {
            offsets: &offsets,
            ids: &ids,
        }),
    };
    for mode in PolicyLossMode::ALL {
        let mut cfg = config(mode);
        if mode == PolicyLossMode::Dro {
            cfg.dro_beta = Some(0.3);
        }
        // DPPO's and VESPO's gradients are the detached forms of
        // docs/MATH.md#policy-modes-of-2026, not the derivative of their loss's value;
        // every mode is checked against the plain loss below
        let detached = [
            PolicyLossMode::DppoTv,
            PolicyLossMode::DppoKl,
            PolicyLossMode::Vespo,
        ];
        if !detached.contains(&mode) {
            check_gradient(&cfg, &d, &s, &format!("{mode:?}"));
        }
        check_as_plain_loss(&cfg, &d, &s, &format!("{mode:?}"));
        let out = policy_loss_sampled(&cfg, &batch(&d, &d.x), None, &s).unwrap();
        // outside its set a row has no gradient; a set of one token, none at all
        for (r, row) in out.grad.chunks(V).enumerate() {
            let set = &ids[offsets[r] as usize..offsets[r + 1] as usize];
            for (v, &g) in row.iter().enumerate() {
                let kept = set.is_empty() || set.contains(&(v as u32));
                assert!(
                    kept || g == 0.0,
                    "{mode:?}: row {r} id {v} outside the set: {g}"
                );
            }
        }
        assert_eq!(out.logp[5], 0.0, "{mode:?}: one token kept");
        assert!(out.grad[5 * V..].iter().all(|&g| g == 0.0), "{mode:?}");
    }
}

#[test]
fn computed_sets_take_their_gradient_over_what_they_keep() {
    let d = data();
    for (k, p, m) in [(4, 1.0, 0.0), (0, 0.8, 0.0), (0, 1.0, 0.1), (5, 0.9, 0.05)] {
        let s = SamplerBatch {
            sampler: Sampler {
                top_k: k,
                top_p: p,
                min_p: m,
                softcap: None,
            },
            temperatures: Some(&d.temps),
            keep: None,
        };
        let mut y = d.y.clone();
        // each read row's target: its most probable token, kept by every option
        for r in (0..ROWS).filter(|&r| d.mask[r] > 0.0) {
            let row = &d.x[r * V..(r + 1) * V];
            y[r] = (0..V).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u32;
        }
        let d = Data { y, ..data() };
        for mode in [
            PolicyLossMode::PpoClip,
            PolicyLossMode::Gspo,
            PolicyLossMode::Cispo,
        ] {
            let what = format!("{mode:?} k {k} p {p} min-p {m}");
            check_gradient(&config(mode), &d, &s, &what);
            check_as_plain_loss(&config(mode), &d, &s, &what);
        }
    }
}

#[test]
fn with_every_option_off_it_is_the_plain_loss() {
    let d = data();
    let cfg = LossConfig {
        temperature: 0.8,
        ..config(PolicyLossMode::PpoClip)
    };
    let b = batch(&d, &d.x);
    let plain = policy_loss_with(&cfg, &b, None).unwrap();
    let off = policy_loss_sampled(&cfg, &b, None, &SamplerBatch::default()).unwrap();
    assert_eq!(
        (off.loss, &off.grad, &off.lse),
        (plain.loss, &plain.grad, &plain.lse)
    );
    // every row's set empty: every token kept, the same loss to rounding
    let offsets = [0u32; ROWS + 1];
    let everything = SamplerBatch {
        keep: Some(KeptSets {
            offsets: &offsets,
            ids: &[],
        }),
        ..SamplerBatch::default()
    };
    let all = policy_loss_sampled(&cfg, &b, None, &everything).unwrap();
    assert!((all.loss - plain.loss).abs() < 1e-14);
    for (a, p) in all.grad.iter().zip(&plain.grad) {
        assert!((a - p).abs() < 1e-14);
    }
}

fn named(r: wgpu_policy_loss::Result<impl Sized>) -> String {
    match r {
        Err(Error::InvalidArgument { arg, reason }) => format!("{arg}: {reason}"),
        Err(e) => panic!("not an argument error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn bad_input_names_the_tensor_and_the_row() {
    let d = data();
    let cfg = config(PolicyLossMode::PpoClip);
    let b = batch(&d, &d.x);
    let run = |s: &SamplerBatch<'_>, cfg: &LossConfig| policy_loss_sampled(cfg, &b, None, s);
    let (offsets, ids) = kept_sets();
    let with = |offsets: &'static [u32], ids: &'static [u32]| SamplerBatch {
        keep: Some(KeptSets { offsets, ids }),
        ..SamplerBatch::default()
    };
    // the temperatures: with a scalar one, a bad one on a read row (row 4's −1 is not)
    let t = SamplerBatch {
        temperatures: Some(&d.temps),
        ..SamplerBatch::default()
    };
    let warm = LossConfig {
        temperature: 0.9,
        ..cfg
    };
    assert!(named(run(&t, &warm)).starts_with("temperature: "));
    assert!(run(&t, &cfg).is_ok(), "row 4's temperature is not read");
    let mut temps = d.temps.clone();
    temps[3] = f64::NAN;
    let bad = SamplerBatch {
        temperatures: Some(&temps),
        ..SamplerBatch::default()
    };
    let e = named(run(&bad, &cfg));
    assert!(e.starts_with("temperatures: row 3"), "{e}");
    // the CSR's shape, and its ids, on any row
    for (o, why) in [
        (&[0u32, 1][..], "keep_offsets"),
        (&[1, 1, 1, 1, 1, 1, 1], "keep_offsets"),
        (&[0, 1, 0, 1, 1, 1, 1], "keep_offsets"),
        (&[0, 1, 1, 1, 1, 1, 2], "keep_offsets"),
    ] {
        let o: &'static [u32] = Box::leak(o.to_vec().into_boxed_slice());
        assert!(named(run(&with(o, &[2]), &cfg)).starts_with(why));
    }
    let e = named(run(&with(&[0, 0, 0, 0, 0, 2, 2], &[1, 1]), &cfg));
    assert!(e.starts_with("keep_ids: row 4"), "{e}");
    let e = named(run(&with(&[0, 0, 0, 0, 0, 0, 1], &[9]), &cfg));
    assert!(e.starts_with("keep_ids: row 5"), "{e}");
    // a read row's target outside its set; row 4 (masked out) may be anything
    let e = named(run(&with(&[0, 0, 1, 1, 1, 1, 1], &[0]), &cfg));
    assert!(e.starts_with("targets: row 1"), "{e}");
    assert!(run(&with(&[0, 0, 0, 0, 0, 1, 1], &[0]), &cfg).is_ok());
    // a given set with a computed option, and the options' own ranges
    let both = SamplerBatch {
        sampler: Sampler {
            top_k: 3,
            ..Sampler::default()
        },
        keep: Some(KeptSets {
            offsets: &offsets,
            ids: &ids,
        }),
        ..SamplerBatch::default()
    };
    assert!(named(run(&both, &cfg)).starts_with("keep_offsets: "));
    for (s, arg) in [
        (
            Sampler {
                top_k: -2,
                ..Sampler::default()
            },
            "top_k",
        ),
        (
            Sampler {
                top_p: 0.0,
                ..Sampler::default()
            },
            "top_p",
        ),
        (
            Sampler {
                min_p: 2.0,
                ..Sampler::default()
            },
            "min_p",
        ),
        (
            Sampler {
                softcap: Some(0.0),
                ..Sampler::default()
            },
            "logit_softcap",
        ),
    ] {
        let s = SamplerBatch {
            sampler: s,
            ..SamplerBatch::default()
        };
        assert!(named(run(&s, &cfg)).starts_with(arg));
    }
}
