use super::*;
use crate::reference::{row_stats, softmax};

fn row(x: &[f64], tau: f64, s: Sampler, given: Option<&[u32]>) -> SampledRow {
    sampled_row(x, tau, &s, given).unwrap()
}

fn kept(r: &SampledRow) -> Vec<usize> {
    (0..r.keep.len()).filter(|&v| r.keep[v]).collect()
}

fn top_k(k: i64) -> Sampler {
    Sampler {
        top_k: k,
        ..Sampler::default()
    }
}

fn top_p(p: f64) -> Sampler {
    Sampler {
        top_p: p,
        ..Sampler::default()
    }
}

fn arg_of(e: Error) -> &'static str {
    match e {
        Error::InvalidArgument { arg, .. } => arg,
        other => panic!("not an argument error: {other}"),
    }
}

#[test]
fn with_every_option_off_it_is_the_plain_row() {
    let x = [0.3, -1.2, 2.5, 0.0, -0.7, 1.1];
    for tau in [1.0, 0.7] {
        let r = row(&x, tau, Sampler::default(), None);
        let plain = row_stats(&x, 2, tau);
        assert_eq!((r.lse, r.entropy), (plain.lse, plain.entropy));
        assert!((r.logp(2).unwrap() - plain.logp).abs() < 1e-14);
        for (a, b) in r.p.iter().zip(softmax(&x, tau)) {
            assert!((a - b).abs() < 1e-15);
        }
        // an empty given set is every token too
        assert_eq!(row(&x, tau, Sampler::default(), Some(&[])), r);
    }
}

#[test]
fn top_k_keeps_every_token_tied_with_the_kth_value() {
    let x = [3.0, 1.0, 3.0, 2.0, 3.0, 0.0];
    assert_eq!(kept(&row(&x, 1.0, top_k(2), None)), [0, 2, 4]);
    assert_eq!(kept(&row(&x, 1.0, top_k(3), None)), [0, 2, 4]);
    assert_eq!(kept(&row(&x, 1.0, top_k(4), None)), [0, 2, 3, 4]);
    assert_eq!(kept(&row(&x, 1.0, top_k(-1), None)).len(), 6);
}

#[test]
fn top_p_ties_stand_or_fall_together() {
    // π ∝ e², e², e, 1: the two 2s hold 0.80 of the mass, 0.40 each
    let x = [2.0, 2.0, 1.0, 0.0];
    // one 2 alone would reach 0.3, but its twin has no larger mass: both stay
    assert_eq!(kept(&row(&x, 1.0, top_p(0.3), None)), [0, 1]);
    assert_eq!(kept(&row(&x, 1.0, top_p(0.79), None)), [0, 1]);
    assert_eq!(kept(&row(&x, 1.0, top_p(0.81), None)), [0, 1, 2]);
    // the most probable token is always kept
    assert_eq!(kept(&row(&[5.0, 0.0], 1.0, top_p(1e-9), None)), [0]);
}

#[test]
fn min_p_keeps_the_tokens_tied_with_its_threshold() {
    let x = [0.0, 0.5f64.ln(), 0.25f64.ln()];
    let s = Sampler {
        min_p: 0.5,
        ..Sampler::default()
    };
    assert_eq!(kept(&row(&x, 1.0, s, None)), [0, 1]);
}

#[test]
fn the_options_apply_in_vllms_order() {
    // min-p keeps z ≥ 4 − 2.5, top-k 3 drops the 2, top-p runs over π' on {4, 3, 3}:
    // e⁴/(e⁴ + 2e³) = e/(e + 2) ≈ 0.576 lies above both 3s
    let x = [4.0, 3.0, 3.0, 2.0, 1.0, 0.0];
    let s = |p| Sampler {
        min_p: (-2.5f64).exp(),
        top_k: 3,
        top_p: p,
        ..Sampler::default()
    };
    assert_eq!(kept(&row(&x, 1.0, s(0.6), None)), [0, 1, 2]);
    assert_eq!(kept(&row(&x, 1.0, s(0.5), None)), [0]);
}

#[test]
fn the_set_does_not_depend_on_the_order_of_the_vocabulary() {
    let x = [1.0, 3.0, 2.0, 3.0, -1.0, 2.0, 0.5];
    let perm = [4usize, 2, 6, 0, 5, 1, 3];
    let s = Sampler {
        top_k: 4,
        top_p: 0.9,
        softcap: Some(2.5),
        ..Sampler::default()
    };
    let a = row(&x, 0.8, s, None);
    let xp: Vec<f64> = perm.iter().map(|&i| x[i]).collect();
    let b = row(&xp, 0.8, s, None);
    for (j, &i) in perm.iter().enumerate() {
        assert_eq!(a.keep[i], b.keep[j]);
        assert!((a.p[i] - b.p[j]).abs() < 1e-15);
    }
    assert!((a.lse - b.lse).abs() < 1e-14);
}

#[test]
fn a_single_kept_token_has_log_prob_zero_and_no_loss_gradient() {
    let x = [0.3, -1.0, 2.0, 0.7];
    let r = row(&x, 0.9, Sampler::default(), Some(&[1]));
    assert_eq!(r.logp(1).unwrap(), 0.0);
    assert!(r.loss_grad(1, -1.7, 0.05).iter().all(|&g| g == 0.0));
    assert!(r.entropy.abs() < 1e-15);
}

#[test]
fn bad_input_names_its_argument() {
    let x = [0.0, 1.0, 2.0];
    let e = |s: Sampler, tau: f64, given: Option<&[u32]>| {
        arg_of(sampled_row(&x, tau, &s, given).unwrap_err())
    };
    let off = Sampler::default();
    assert_eq!(e(off, 1.0, Some(&[0, 3])), "keep_ids");
    assert_eq!(e(off, 1.0, Some(&[2, 0, 2])), "keep_ids");
    assert_eq!(e(top_k(1), 1.0, Some(&[0])), "keep_offsets");
    assert_eq!(e(top_k(-2), 1.0, None), "top_k");
    for p in [0.0, 1.5, f64::NAN] {
        assert_eq!(e(top_p(p), 1.0, None), "top_p");
    }
    for m in [-0.1, 1.1, f64::NAN] {
        let s = Sampler { min_p: m, ..off };
        assert_eq!(e(s, 1.0, None), "min_p");
    }
    for c in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        let s = Sampler {
            softcap: Some(c),
            ..off
        };
        assert_eq!(e(s, 1.0, None), "logit_softcap");
    }
    for tau in [0.0, -0.5, f64::NAN, f64::INFINITY] {
        assert_eq!(e(off, tau, None), "temperatures");
    }
    let r = row(&x, 1.0, off, Some(&[0, 2]));
    assert_eq!(arg_of(r.logp(1).unwrap_err()), "targets");
    assert_eq!(arg_of(r.logp(3).unwrap_err()), "targets");
}

/// a·logp + b·H + c·lse of `x` over a fixed kept set.
fn objective(x: &[f64], tau: f64, s: &Sampler, keep: &[u32], y: usize, abc: [f64; 3]) -> f64 {
    let r = sampled_row(x, tau, s, Some(keep)).unwrap();
    abc[0] * r.logp(y).unwrap() + abc[1] * r.entropy + abc[2] * r.lse
}

#[test]
fn the_vector_jacobian_product_is_the_derivative() {
    // a capped, heated row over a given set
    let x = [0.4, -1.3, 2.2, 0.9, -0.2, 1.6, 3.1];
    let (tau, y) = (0.8, 3usize);
    let capped = Sampler {
        softcap: Some(3.0),
        ..Sampler::default()
    };
    let keep = [0u32, 2, 3, 5];
    for abc in [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [-0.7, 0.3, 1.9],
    ] {
        let r = row(&x, tau, capped, Some(&keep));
        let got = r.vjp(Some(y), abc[0], abc[1], abc[2]);
        let h = 1e-6;
        for v in 0..x.len() {
            let (mut up, mut down) = (x, x);
            up[v] += h;
            down[v] -= h;
            let want = (objective(&up, tau, &capped, &keep, y, abc)
                - objective(&down, tau, &capped, &keep, y, abc))
                / (2.0 * h);
            assert!(
                (got[v] - want).abs() < 1e-8,
                "{abc:?} element {v}: {} vs {want}",
                got[v]
            );
        }
    }
    // top-k 4 computes the four largest, and the same row as that set given
    let s = Sampler { top_k: 4, ..capped };
    let computed = row(&x, tau, s, None);
    assert_eq!(kept(&computed), [2, 3, 5, 6]);
    let given = row(&x, tau, capped, Some(&[6, 3, 2, 5]));
    assert_eq!(computed, given);
}

#[test]
fn the_loss_gradient_is_the_primitives_with_the_slope_and_entropy_coefficient() {
    let x = [0.4, -1.3, 2.2, 0.9];
    let r = row(&x, 1.3, Sampler::default(), None);
    let (g, wg) = (-0.6, 0.02);
    let p = softmax(&x, 1.3);
    let st = row_stats(&x, 1, 1.3);
    let mean: f64 = p.iter().zip(&x).map(|(p, x)| p * x / 1.3).sum();
    for (v, got) in r.loss_grad(1, g, wg).into_iter().enumerate() {
        let onehot = f64::from(v == 1);
        let want = (g * (onehot - p[v]) + wg * p[v] * (x[v] / 1.3 - mean)) / 1.3;
        assert!((got - want).abs() < 1e-15, "{v}: {got} vs {want}");
    }
    assert!((r.entropy - st.entropy).abs() < 1e-15);
}

#[test]
fn a_nan_logit_makes_the_row_nan_whatever_the_options() {
    let x = [1.0, f64::NAN, 3.0, 0.5];
    for s in [
        Sampler::default(),
        top_k(1),
        top_p(0.5),
        Sampler {
            min_p: 0.9,
            ..Sampler::default()
        },
    ] {
        let r = row(&x, 1.0, s, None);
        assert!(
            r.lse.is_nan() && r.entropy.is_nan(),
            "{s:?}: lse {}, H {}",
            r.lse,
            r.entropy
        );
        assert!(
            r.vjp(Some(2), 1.0, 0.5, 0.5).iter().any(|g| g.is_nan()),
            "{s:?}"
        );
    }
}
