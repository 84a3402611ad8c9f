// The per-token terms that both the row kernel (policy_loss.wgsl) and the sequence pass
// (seq_terms.wgsl) evaluate: the clipped objective of docs/MATH.md with dual-clip or
// TRL's two-sided δ, SAPO's gate, VESPO's gamma weight and the KL estimators. Pure
// functions of their arguments: the sequence pass sums a sequence's gradient from the
// very decisions the row kernel takes for its tokens.
//
// requires: Clip, HAS_DELTA, HAS_DUAL, KL_ABS, KL_K1, KL_K2, ROW_CLIPPED, ROW_DUAL
// requires: Vespo, clamp_keep_nan, is_finite

// A token's policy term l, g = ∂l/∂logp, its metric flags (ROW_*), and whether the
// selected term moves with the ratio (a sequence ratio's gradient goes through it).
struct Term {
    l: f32,
    g: f32,
    flags: f32,
    moves: bool,
}

// The clipped objective for ratio r (ppo_clip, clip_cov, gspo; docs/MATH.md, "Policy
// modes of 2025" and "Ratio options"); `dual_clip` where the dual clip may apply. With δ (TRL's two-sided clip) the unclipped term is −A·min(r, δ), and
// it moves with r only below δ.
fn clipped_term(c: Clip, flags: u32, a: f32, r: f32, dual_clip: bool) -> Term {
    let l2 = -a * clamp(r, 1.0 - c.low, 1.0 + c.high);
    if ((flags & HAS_DELTA) != 0u) {
        let l1 = -a * min(r, c.delta);
        let first = l1 >= l2;
        let moves = select(1.0 - c.low <= r && r <= 1.0 + c.high, r <= c.delta, first);
        let clipped = l2 > -a * r;
        let capped = first && r > c.delta;
        let fl = select(0.0, f32(ROW_CLIPPED), clipped) + select(0.0, f32(ROW_DUAL), capped);
        return Term(select(l2, l1, first), select(0.0, -a * r, moves), fl, moves);
    }
    let l1 = -a * r;
    let clipped = l2 > l1;
    var l = select(l1, l2, clipped);
    var dual = false;
    if (dual_clip && (flags & HAS_DUAL) != 0u) {
        let cap = -a * c.c;
        if (a < 0.0 && l > cap) {
            l = cap;
            dual = true;
        }
    }
    let fl = select(0.0, f32(ROW_CLIPPED), clipped) + select(0.0, f32(ROW_DUAL), dual);
    let moves = !(clipped || dual);
    return Term(l, select(-a * r, 0.0, !moves), fl, moves);
}

// SAPO's gate σ(τ_A·(r − 1)) and its temperature τ_A (τ_pos for A > 0).
fn sapo_gate(tau_pos: f32, tau_neg: f32, a: f32, r: f32) -> vec2<f32> {
    let t = select(tau_neg, tau_pos, a > 0.0);
    return vec2<f32>(t, 1.0 / (1.0 + exp(-t * (r - 1.0))));
}

// VESPO's ln φ = λ + k·L − λ·e^L for a sequence's log weight L, (k, λ) by the sign of A.
fn vespo_log_phi(v: Vespo, a: f32, log_w: f32) -> f32 {
    let k = select(v.k_neg, v.k_pos, a >= 0.0);
    let lambda = max(select(v.lambda_neg, v.lambda_pos, a >= 0.0), 1e-4);
    return lambda + k * log_w - lambda * exp(log_w);
}

// φ; a NaN or ±inf φ weighs nothing (TRL's nan_to_num).
fn vespo_phi(v: Vespo, a: f32, log_w: f32) -> f32 {
    let phi = exp(vespo_log_phi(v, a, log_w));
    return select(0.0, phi, is_finite(phi));
}

// φ·A, as exp(ln φ + ln|A|): ln φ passes −100 (φ = 0 in f32) for sequence log ratios of a
// few units, where φ·A would make an infinite advantage's term 0·inf = NaN, not inf.
fn vespo_phi_a(v: Vespo, a: f32, log_w: f32) -> f32 {
    let log_phi = vespo_log_phi(v, a, log_w);
    if (!is_finite(exp(log_phi))) {
        return 0.0 * a;
    }
    return sign(a) * exp(log_phi + log(abs(a)));
}

// The KL estimator of ref_logp against logp, and its derivative in logp; `straight`:
// verl's trailing `+`, the estimator's value with k2's unclamped gradient.
fn kl_term(kind: u32, straight: bool, logp: f32, ref_logp: f32) -> vec2<f32> {
    var kl = kl_estimate(kind, logp, ref_logp);
    if (straight) {
        kl.y = logp - ref_logp;
    }
    return kl;
}

fn kl_estimate(kind: u32, logp: f32, ref_logp: f32) -> vec2<f32> {
    let delta = ref_logp - logp;
    if (kind == KL_K1) {
        return vec2<f32>(logp - ref_logp, 1.0);
    }
    if (kind == KL_K2) {
        return vec2<f32>(0.5 * delta * delta, logp - ref_logp);
    }
    if (kind == KL_ABS) {
        return vec2<f32>(abs(logp - ref_logp), sign(logp - ref_logp));
    }
    let d = clamp_keep_nan(delta, -20.0, 20.0);
    let kl = exp(d) - d - 1.0;
    let klc = clamp_keep_nan(kl, -10.0, 10.0);
    // where a clamp is active (never for a NaN, which poisons the row instead)
    let clamped = abs(delta) > 20.0 || abs(kl) > 10.0;
    return vec2<f32>(klc, select(1.0 - exp(delta), 0.0, clamped));
}
