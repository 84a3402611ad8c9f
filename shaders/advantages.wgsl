// One workgroup: advantages from per-sequence rewards
// (docs/MATH.md#advantages-from-rewards). Groups of G consecutive rewards answer one
// prompt; a team of lanes takes each group (each lane a strided part in order, then a
// fixed tree: workgroup/sum.wgsl), and the batch-wide statistics of reinforce_pp use
// the workgroup's tree, so the results are bitwise reproducible. Means and variances
// are two-pass for accuracy, and taken about the first reward: a group whose rewards
// agree (all wrong, all right) sums exact zeros, so its advantages are exactly 0.
// Summed as they are, the f32 mean of equal rewards can miss them by an ulp, which
// GRPO's division by (0 + 1e-6) would blow up to advantages of ~1e-2 for answers that
// were all alike.
//
// requires: GPG, GRPO, GRPO_NO_STD, Params, REINFORCE_PP, WG_SIZE, team_segment
// requires: team_sum, workgroup_sum

// Params, the uniform block: declared in src/shader/abi/advantages.rs
// and the estimators' codes (GRPO, GRPO_NO_STD, RLOO, REINFORCE_PP, GPG)

const EPS: f32 = 1e-6;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rewards: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn reward(i: u32) -> f32 {
    return rewards[params.in_offset + i];
}

@compute @workgroup_size(WG_SIZE)
fn advantages(@builtin(local_invocation_index) lane: u32) {
    let n = params.n;
    if (params.estimator == REINFORCE_PP) {
        let r0 = reward(0u);
        var part = 0.0;
        for (var i = lane; i < n; i += WG_SIZE) {
            part += reward(i) - r0;
        }
        let mean = workgroup_sum(lane, part) / f32(n);
        var sq = 0.0;
        for (var i = lane; i < n; i += WG_SIZE) {
            let d = (reward(i) - r0) - mean;
            sq += d * d;
        }
        let ss = workgroup_sum(lane, sq);
        let sd = sqrt(ss / f32(max(n, 2u) - 1u));
        for (var i = lane; i < n; i += WG_SIZE) {
            let a = ((reward(i) - r0) - mean) / (sd + EPS);
            out[params.out_offset + i] = select(a, 0.0, n < 2u);
        }
        return;
    }
    // GPG scales by the batch's size over its non-zero rewards
    var alpha = 1.0;
    if (params.estimator == GPG) {
        var nonzero = 0.0;
        for (var i = lane; i < n; i += WG_SIZE) {
            nonzero += select(0.0, 1.0, reward(i) != 0.0);
        }
        alpha = f32(n) / max(workgroup_sum(lane, nonzero), 1.0);
    }
    let g = params.group;
    let groups = n / g;
    for (var k = 0u; k < params.teams.rounds; k++) {
        let at = team_segment(params.teams, lane, k);
        let live = at.x < groups;
        let first = at.x * g;
        var r0 = 0.0;
        var part = 0.0;
        if (live) {
            r0 = reward(first);
            for (var j = at.y; j < g; j += params.teams.size) {
                part += reward(first + j) - r0;
            }
        }
        let sum = team_sum(lane, params.teams.size, vec2<f32>(part, 0.0)).x;
        let mean = sum / f32(g);
        var sq = 0.0;
        if (live) {
            for (var j = at.y; j < g; j += params.teams.size) {
                let d = (reward(first + j) - r0) - mean;
                sq += d * d;
            }
        }
        let sd = sqrt(team_sum(lane, params.teams.size, vec2<f32>(sq, 0.0)).x / f32(max(g, 2u) - 1u));
        if (live) {
            for (var j = at.y; j < g; j += params.teams.size) {
                let r = reward(first + j) - r0;
                var a: f32;
                if (params.estimator == GRPO) {
                    a = (r - mean) / (sd + EPS);
                } else if (params.estimator == GRPO_NO_STD) {
                    a = r - mean;
                } else if (params.estimator == GPG) {
                    a = alpha * (r - mean);
                } else {
                    a = r - (sum - r) / f32(max(g, 2u) - 1u);
                }
                // a group of one has no baseline: advantage 0
                out[params.out_offset + first + j] = select(a, 0.0, g < 2u);
            }
        }
    }
}
