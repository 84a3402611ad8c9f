//! Bad arguments are errors that name them; bad ids name their row.

mod common;

use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use common::{devices, Case};
use wgpu_policy_loss_burn::{
    policy_loss, AdvantageEstimator, LossConfig, LossExtras, PolicyLossMode, Positions,
};

/// The error of a call with `f` applied to a valid one's arguments.
#[track_caller]
fn error(device: &burn::tensor::Device, f: impl FnOnce(&mut Args)) -> String {
    let case = Case::new(3, (2, 5, 11), Positions::Aligned);
    let mut a = Args {
        logits: case.logits(device, FloatDType::F32),
        ids: case.ids(device),
        mask: case.mask(device),
        adv: case.advantages(device),
        extras: case.extras(device),
        cfg: LossConfig::default(),
    };
    f(&mut a);
    match policy_loss(a.logits, a.ids, a.mask, a.adv, a.extras, &a.cfg) {
        Ok(_) => panic!("the call succeeded"),
        Err(e) => e.to_string(),
    }
}

struct Args {
    logits: Tensor<3>,
    ids: Tensor<2, Int>,
    mask: Tensor<2>,
    adv: wgpu_policy_loss_burn::Advantages,
    extras: LossExtras,
    cfg: LossConfig,
}

fn expect(e: String, arg: &str) {
    assert!(
        e.contains(&format!("`{arg}`")),
        "the error does not name `{arg}`: {e}"
    );
}

#[test]
fn bad_shapes_name_the_argument() {
    for (_, d) in devices() {
        let d = d.clone();
        expect(error(&d, |a| a.ids = Tensor::zeros([2, 4], &d)), "targets");
        expect(error(&d, |a| a.mask = Tensor::ones([2, 4], &d)), "mask");
        expect(
            error(&d, |a| a.adv = Tensor::<1>::zeros([3], &d).into()),
            "advantages",
        );
        expect(
            error(&d, |a| a.adv = Tensor::<2>::zeros([2, 4], &d).into()),
            "advantages",
        );
        expect(
            error(&d, |a| {
                a.extras.old_logprobs = Some(Tensor::zeros([1, 5], &d))
            }),
            "old_logprobs",
        );
        expect(
            error(&d, |a| {
                a.extras.ref_logprobs = Some(Tensor::zeros([2, 6], &d))
            }),
            "ref_logprobs",
        );
        expect(
            error(&d, |a| {
                a.extras.rollout_logprobs = Some(Tensor::zeros([5, 2], &d))
            }),
            "rollout_logprobs",
        );
        // the shift leaves S − 1 rows: a [B, S] mask is one too long
        expect(
            error(&d, |a| a.extras.positions = Positions::Shifted),
            "mask",
        );
        expect(
            error(&d, |a| {
                a.extras.positions = Positions::Response { prompt_len: 0 }
            }),
            "positions",
        );
        expect(
            error(&d, |a| {
                a.extras.positions = Positions::Response { prompt_len: 5 }
            }),
            "positions",
        );
    }
}

/// Burn's wgpu tensors are f32, f16 or bf16, which the op takes; per-token tensors in
/// 16 bits and 64-bit ids are converted (O(rows)), not refused.
#[test]
fn other_dtypes_are_converted() {
    for (name, d) in devices() {
        let case = Case::new(4, (2, 5, 11), Positions::Aligned);
        let cfg = LossConfig::default();
        let f16 = |v: &[f32]| {
            Tensor::<2>::from_data(
                TensorData::new(v.iter().map(|&x| half::f16::from_f32(x)).collect(), [2, 5]),
                d,
            )
        };
        let ids64: Vec<i64> = case.ids.iter().map(|&i| i as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids64, [2, 5]), d);
        let a = policy_loss(
            case.logits(d, FloatDType::F32),
            case.ids(d),
            case.mask(d),
            case.advantages(d),
            case.extras(d),
            &cfg,
        )
        .unwrap();
        let b = policy_loss(
            case.logits(d, FloatDType::F32),
            ids,
            f16(&case.mask),
            case.advantages(d),
            case.extras(d),
            &cfg,
        )
        .unwrap();
        assert_eq!(common::values(a.loss), common::values(b.loss), "{name}");
    }
}

#[test]
fn bad_values_and_configurations_name_them() {
    for (_, d) in devices() {
        let d = d.clone();
        // an id outside the vocabulary, on a masked-in row: the row is named
        let e = error(&d, |a| {
            a.ids = Tensor::from_data(
                TensorData::new(vec![0, 1, 2, 3, 4, 99, 6, 7, 8, 9], [2, 5]),
                &d,
            )
        });
        expect(e.clone(), "targets");
        assert!(e.contains("row 5"), "{e}");
        let e = error(&d, |a| {
            a.mask = Tensor::from_data(
                TensorData::new(
                    vec![-1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                    [2, 5],
                ),
                &d,
            )
        });
        expect(e, "mask");
        let e = error(&d, |a| {
            a.adv = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, f32::NAN], [2]), &d).into()
        });
        expect(e, "advantages");
        // the KL term reads the reference policy
        expect(
            error(&d, |a| {
                a.extras.ref_logprobs = None;
                a.cfg.kl_coef = 0.1;
            }),
            "ref_logprobs",
        );
        // dro needs its β_D
        expect(error(&d, |a| a.cfg.mode = PolicyLossMode::Dro), "dro_beta");
        let e =
            wgpu_policy_loss_burn::advantages(Tensor::zeros([5], &d), AdvantageEstimator::Grpo, 2)
                .unwrap_err();
        expect(e.to_string(), "rewards");
        let e =
            wgpu_policy_loss_burn::advantages(Tensor::zeros([4], &d), AdvantageEstimator::Grpo, 0)
                .unwrap_err();
        expect(e.to_string(), "group_size");
    }
}

/// Calls on one device from several threads at once, a third of them failing where
/// the op executes (a head call with `chunk_rows` 0), a third on a bad id: each call
/// returns its own outcome. With Fusion the op runs lazily, on whichever thread
/// drains the stream, so an error kept by device or by thread would reach a
/// neighbour's call.
#[test]
fn concurrent_calls_get_their_own_errors() {
    for (name, d) in devices() {
        std::thread::scope(|scope| {
            for t in 0..4 {
                let d = d.clone();
                scope.spawn(move || {
                    for i in 0..6 {
                        match (t + i) % 3 {
                            0 => expect(head_with_no_chunk_rows(&d), "chunk_rows"),
                            1 => {
                                let e = error(&d, |a| {
                                    a.ids = Tensor::from_data(
                                        TensorData::new(
                                            vec![0, 1, 2, 3, 4, 99, 6, 7, 8, 9],
                                            [2, 5],
                                        ),
                                        &d,
                                    )
                                });
                                expect(e.clone(), "targets");
                                assert!(e.contains("row 5"), "{name}: {e}");
                            }
                            _ => {
                                let case = Case::new(t + i, (2, 5, 11), Positions::Aligned);
                                let out = policy_loss(
                                    case.logits(&d, FloatDType::F32),
                                    case.ids(&d),
                                    case.mask(&d),
                                    case.advantages(&d),
                                    case.extras(&d),
                                    &LossConfig::default(),
                                )
                                .unwrap_or_else(|e| panic!("{name}: a valid call failed: {e}"));
                                let loss = common::values(out.loss);
                                assert!(loss[0].is_finite(), "{name}: loss {loss:?}");
                            }
                        }
                    }
                });
            }
        });
    }
}

/// The error of a head call asked to make its logits 0 rows at a time, which the op
/// finds where it executes.
fn head_with_no_chunk_rows(d: &burn::tensor::Device) -> String {
    let case = Case::new(9, (2, 5, 11), Positions::Aligned);
    let hidden = Tensor::<3>::ones([2, 5, 4], d);
    let weight = Tensor::<2>::ones([11, 4], d);
    let extras = case.extras(d).with_chunk_rows(0);
    match wgpu_policy_loss_burn::policy_loss_head(
        hidden,
        weight,
        case.ids(d),
        case.mask(d),
        case.advantages(d),
        extras,
        &LossConfig::default(),
    ) {
        Ok(_) => panic!("a head call with chunk_rows 0 succeeded"),
        Err(e) => e.to_string(),
    }
}

/// The primitive's head form names its bad arguments: a weight of another width, a
/// target outside its given kept set (and the row), and chunks of 0 rows (found where
/// the op executes).
#[test]
fn the_primitive_head_names_its_bad_arguments() {
    use wgpu_policy_loss_burn::{logprobs_head, LogProbConfig, LogProbExtras};
    for (_, d) in devices() {
        let case = Case::new(9, (2, 5, 11), Positions::Aligned);
        let hidden = || Tensor::<3>::ones([2, 5, 4], d);
        let call = |weight: Tensor<2>, extras: LogProbExtras| match logprobs_head(
            hidden(),
            weight,
            case.ids(d),
            extras,
            &LogProbConfig::default(),
        ) {
            Ok(_) => panic!("the call succeeded"),
            Err(e) => e.to_string(),
        };
        let weight = || Tensor::<2>::ones([11, 4], d);
        expect(
            call(Tensor::ones([11, 3], d), LogProbExtras::default()),
            "weight",
        );
        // row 3 keeps one id that is not its target
        let (mut offsets, mut ids) = (vec![0i32], Vec::new());
        for k in 0..10 {
            if k == 3 {
                ids.push((case.ids[3] + 1) % 11);
            }
            offsets.push(ids.len() as i32);
        }
        let ints = |v: Vec<i32>| {
            let n = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n]), d)
        };
        let extras = LogProbExtras {
            kept: Some(wgpu_policy_loss_burn::KeptTensors {
                offsets: ints(offsets),
                ids: ints(ids),
            }),
            ..LogProbExtras::default()
        };
        let e = call(weight(), extras);
        expect(e.clone(), "targets");
        assert!(e.contains("row 3"), "the error does not name row 3: {e}");
        let zero = LogProbExtras {
            chunk_rows: Some(0),
            ..LogProbExtras::default()
        };
        expect(call(weight(), zero), "chunk_rows");
    }
}
