// One workgroup, after select.wgsl and before the loss: what each sequence's tokens
// share (docs/MATH.md, "Policy modes of 2026", "Ratio options", "The off-policy sequence
// mask"), into seqinfo.y and .w and rowaux.
//
//   RATIO   s_b = exp(clamp(Σ m·d / n_b, ±20)): GSPO's ratio and TRL's sequence level
//   GEO     GMPO's Ā_b·ρ_b, ρ_b = exp(Σ m·κ / n_b); its weight 1/(n_b·B) (.z) and the
//           geometric mean of the rollout weights q_b (.w)
//   VESPO   L_b = clamp(Σ m·clamp(d, ±20) + Σ m·clamp(ln q), ln 1e-8, 20)
// and, beside any of them, the off-policy mask o_t = 1[A ≥ 0 or κ̄_b ≤ θ] (rowaux), and
// the gradient of a sequence ratio through its mean, per unit of the row's weight:
// s_b / (n_b·c_b) · (Σ_t W_t·h_t + β·Σ_t w_t·kl_t) (.w), which the row kernel adds to G.
//
// A team of lanes takes each sequence (workgroup/sum.wgsl), each lane a strided part of
// its rows in order, then a fixed tree: bitwise reproducible, and no lane walks a whole
// sequence. The second walk (o, the addend, VESPO's metric) reads the first's sums.
//
// requires: HAS_OLD, KIND_GEO, KIND_NONE, KIND_RATIO, KIND_VESPO, MODE_SAPO, OUT_LOGP
// requires: Params, ROWOUT_FLOATS, SEQ_ADD_KL, SEQ_ADD_POLICY, SEQ_HAS_E, SEQ_HAS_Q
// requires: SEQ_OFF_POLICY, SEQ_RENORM, SEQ_SIGMA_ROLLOUT, SEQ_VESPO_TOKEN, WG_SIZE
// requires: clamp_keep_nan, clipped_term, is_nan, kl_term, mask_in, quiet_nan, sapo_gate
// requires: team_rows, team_sum, vespo_phi

// Params, the uniform block: declared in src/shader/abi/seq_terms.rs

@group(0) @binding(0) var<uniform> params: Params;
// per row: mask, advantage, old log-prob, ref log-prob (prepare.wgsl)
@group(0) @binding(1) var<storage, read> rowin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> rowout: array<array<f32, ROWOUT_FLOATS>>;
// two vec4 a row: (rollout log-prob, q, -, -) and (selected, kept, o, VESPO's metric)
@group(0) @binding(3) var<storage, read_write> rowaux: array<vec4<f32>>;
// per sequence: c_b, the sequence value, c'_b, the addend (or q_b)
@group(0) @binding(4) var<storage, read_write> seqinfo: array<vec4<f32>>;

fn has(flag: u32) -> bool {
    return (params.flags & flag) != 0u;
}

// Row i's log ratio d = logp − old_logp (0 on-policy).
fn log_ratio(i: u32) -> f32 {
    if ((params.inputs & HAS_OLD) == 0u) {
        return 0.0;
    }
    return rowout[i][OUT_LOGP] - rowin[i].z;
}

// Row i's rollout weight q (1 without the correction).
fn rollout_q(i: u32) -> f32 {
    return select(1.0, rowaux[2u * i].y, has(SEQ_HAS_Q));
}

// What masked-in row i adds to its sequence's first sums: (n, x1, x2, x3), x1..x2 by
// the kind of the sequence value, x3 the off-policy mask's σ − logp.
fn first_sums(i: u32) -> vec4<f32> {
    let inp = rowin[i];
    let m = inp.x;
    let d = log_ratio(i);
    var v = vec4<f32>(m, 0.0, 0.0, 0.0);
    if (params.kind == KIND_RATIO) {
        v.y = m * d;
    } else if (params.kind == KIND_GEO) {
        let a = inp.y;
        // κ = sgn(A)·min(sgn(A)·d, sgn(A)·clamp(d, −ε_low, ε_high)): d unclamped; a NaN
        // A or d poisons the sequence (a GPU's min and max may drop a NaN)
        var kappa = select(select(0.0, max(d, -params.clip.low), a < 0.0), min(d, params.clip.high), a > 0.0);
        kappa = select(kappa, quiet_nan(), is_nan(a) || is_nan(d));
        v.y = m * kappa;
        v.z = m * a;
        v.w = m * log(rollout_q(i) + 1e-10);
    } else if (params.kind == KIND_VESPO) {
        v.y = m * clamp_keep_nan(d, -20.0, 20.0);
        if (has(SEQ_HAS_Q)) {
            v.z = m * clamp_keep_nan(log(rowaux[2u * i].y), log(1e-8), 20.0);
        }
    }
    if (has(SEQ_OFF_POLICY)) {
        var sigma = rowout[i][OUT_LOGP];
        if (has(SEQ_SIGMA_ROLLOUT)) {
            sigma = rowaux[2u * i].x;
        } else if ((params.inputs & HAS_OLD) != 0u) {
            sigma = inp.z;
        }
        v.w = m * (sigma - rowout[i][OUT_LOGP]);
    }
    return v;
}

// A sequence's values from its sums: .x the sequence value (s_b, Ā_b·ρ_b or L_b), .y
// κ̄_b, .z whether s_b's clamp is active (1 or 0), .w q_b (GEO).
fn seq_values(sums: vec4<f32>) -> vec4<f32> {
    let n = sums.x;
    var value = 0.0;
    var clamped = 0.0;
    var q_b = 1.0;
    if (params.kind == KIND_RATIO) {
        value = 1.0;
        if (n > 0.0) {
            // a NaN old log-prob makes its whole sequence's ratio NaN, as in PyTorch
            let mean = sums.y / n;
            value = exp(clamp_keep_nan(mean, -20.0, 20.0));
            clamped = select(0.0, 1.0, abs(mean) > 20.0);
        }
    } else if (params.kind == KIND_GEO && n > 0.0) {
        value = sums.z / n * exp(sums.y / n);
        if (has(SEQ_HAS_Q)) {
            q_b = exp(sums.w / n);
        }
    } else if (params.kind == KIND_VESPO) {
        value = clamp_keep_nan(sums.y + sums.z, log(1e-8), 20.0);
    }
    return vec4<f32>(value, sums.w / max(n, 1.0), clamped, q_b);
}

// The off-policy mask's o of a row with advantage a: kept unless A < 0 and κ̄_b > θ; a
// NaN κ̄_b poisons the whole sequence.
fn off_policy_keep(a: f32, kappa_bar: f32) -> f32 {
    if (is_nan(kappa_bar)) {
        return kappa_bar;
    }
    return select(0.0, 1.0, a >= 0.0 || kappa_bar <= params.threshold);
}

// ∂l_t/∂s of a token at the sequence ratio s (the selected term, where it moves).
fn ratio_slope(a: f32, s: f32) -> f32 {
    if (params.policy == MODE_SAPO) {
        let sig = sapo_gate(params.tau_pos, params.tau_neg, a, s).y;
        return -4.0 * sig * (1.0 - sig) * a;
    }
    let t = clipped_term(params.clip, params.clip_flags, a, s, true);
    return select(0.0, -a, t.moves);
}

// What row i writes and adds in the second walk: o (rowaux), VESPO's metric, and
// (Σ W·h, Σ w·kl) for the addend.
fn second_walk(i: u32, first: bool, sv: vec4<f32>, c: vec2<f32>) -> vec2<f32> {
    let inp = rowin[i];
    let a = inp.y;
    var o = 1.0;
    if (has(SEQ_OFF_POLICY)) {
        o = off_policy_keep(a, sv.y);
        rowaux[2u * i + 1u].z = o;
    }
    let m = select(0.0, inp.x, mask_in(inp.x));
    if (params.kind == KIND_VESPO) {
        // per token: Σ m·φ over the batch (reduce divides by Σ m); per sequence: φ_b / B
        // on the sequence's first row
        let phi = vespo_phi(params.vespo, a, sv.x);
        var metric = select(0.0, phi / f32(params.all_seqs), first);
        if (has(SEQ_VESPO_TOKEN)) {
            metric = m * phi;
        }
        rowaux[2u * i + 1u].w = metric;
    }
    if (m == 0.0) {
        return vec2<f32>(0.0, 0.0);
    }
    var out = vec2<f32>(0.0, 0.0);
    if (has(SEQ_ADD_POLICY)) {
        var w = m * select(c.x, c.y, has(SEQ_RENORM)) * rollout_q(i) * o;
        if (has(SEQ_HAS_E)) {
            w *= rowaux[2u * i + 1u].y;
        }
        out.x = w * ratio_slope(a, sv.x);
    }
    if (has(SEQ_ADD_KL)) {
        let kl = kl_term(params.kl_type, false, rowout[i][OUT_LOGP], inp.w).x;
        out.y = m * c.x * kl;
    }
    return out;
}

@compute @workgroup_size(WG_SIZE)
fn seq_terms(@builtin(local_invocation_index) lane: u32) {
    let part = params.part;
    for (var k = 0u; k < params.teams.rounds; k++) {
        let tr = team_rows(params.teams, lane, k, part.seqs, part.rows_per_seq, part.rows);
        var acc = vec4<f32>(0.0, 0.0, 0.0, 0.0);
        for (var r = tr.begin; r < tr.end; r += tr.step) {
            let i = part.part_row + r;
            if (mask_in(rowin[i].x)) {
                acc += first_sums(i);
            }
        }
        let lo = team_sum(lane, params.teams.size, acc.xy);
        let hi = team_sum(lane, params.teams.size, acc.zw);
        let sv = seq_values(vec4<f32>(lo, hi));
        let b = part.part_seq + tr.seq;
        // (c_b, c'_b) of the lane's sequence (only read where it has one)
        var c = vec2<f32>(0.0, 0.0);
        if (tr.end > tr.begin) {
            c = seqinfo[b].xz;
        }
        var add = vec2<f32>(0.0, 0.0);
        for (var r = tr.begin; r < tr.end; r += tr.step) {
            add += second_walk(part.part_row + r, r == tr.seq * part.rows_per_seq, sv, c);
        }
        let total = team_sum(lane, params.teams.size, add);
        if (tr.lead) {
            write_seq(b, lo.x, sv, total, c.x);
        }
    }
}

// The lead's writes: the sequence value, and the addend (or GEO's weight and q_b).
fn write_seq(b: u32, n: f32, sv: vec4<f32>, total: vec2<f32>, c_b: f32) {
    if (params.kind != KIND_NONE) {
        seqinfo[b].y = sv.x;
    }
    if (params.kind == KIND_GEO) {
        seqinfo[b].z = select(0.0, 1.0 / (n * f32(params.all_seqs)), n > 0.0);
        seqinfo[b].w = sv.w;
        return;
    }
    if (has(SEQ_ADD_POLICY) || has(SEQ_ADD_KL)) {
        // d(s_b)/d(logp_u) = s_b·m_u / n_b, 0 where the clamp holds s_b; per unit of
        // w_u = m_u·c_b
        let sum = total.x + params.kl_coef * total.y;
        let scale = select(0.0, sv.x / (n * c_b), n > 0.0 && c_b > 0.0 && sv.z == 0.0);
        seqinfo[b].w = scale * sum;
    }
}
