// The demo's policy, a tiny MLP that answers "a+b=" digit by digit: the answer is L
// tokens (the digits of a + b, leading zeros included), each sampled from
//
//   h_t      = relu(E[a] + E[A + b] + P[t] + Q[y_{t-1}] + b1)      (Q only for t > 0)
//   logits_t = W h_t + c
//
// so the second digit is conditioned on the first. Row s·L + t holds position t of
// sampled answer s.
//
// forward:  one invocation per answer, for the position `params.pos`
// sample:   one invocation per answer: a token from softmax(logits) with a
//           counter-based random number (seed, step, row); after the last position,
//           the answer's reward (+1 right, -0.1 wrong)
// backward: one invocation per parameter, summing over rows in a fixed order (no
//           atomics: bitwise reproducible)
// adam:     one invocation per parameter
//
// The loss and its gradient with respect to the logits come from the library.

override H: u32 = 32u;
override V: u32 = 10u;
override A: u32 = 10u;
override L: u32 = 2u;

// Params, the uniform block: declared in src/demo.rs, its WGSL generated (abi.rs)

@group(0) @binding(0) var<uniform> params: Params;
// (a, b) of each answer
@group(0) @binding(1) var<storage, read> prompts: array<vec2<u32>>;
// E [2A × H], P [L × H], Q [V × H], b1 [H], W [V × H], c [V], one flat array
@group(0) @binding(2) var<storage, read_write> theta: array<f32>;
@group(0) @binding(3) var<storage, read_write> hidden: array<f32>;
@group(0) @binding(4) var<storage, read_write> logits: array<f32>;
@group(0) @binding(5) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(6) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad_logits: array<f32>;
// per parameter: Adam's two moments and the gradient
@group(0) @binding(8) var<storage, read_write> moments: array<vec4<f32>>;

fn e_at(i: u32, j: u32) -> u32 { return i * H + j; }
fn p_at(t: u32, j: u32) -> u32 { return 2u * A * H + t * H + j; }
fn q_at(y: u32, j: u32) -> u32 { return (2u * A + L) * H + y * H + j; }
fn b1_at(j: u32) -> u32 { return (2u * A + L + V) * H + j; }
fn w_at(v: u32, j: u32) -> u32 { return (2u * A + L + V + 1u) * H + v * H + j; }
fn c_at(v: u32) -> u32 { return (2u * A + L + 2u * V + 1u) * H + v; }
fn n_params() -> u32 { return c_at(0u) + V; }

// The pre-activation of hidden unit j at row r = s·L + t.
fn pre(s: u32, t: u32, j: u32) -> f32 {
    let p = prompts[s];
    var z = theta[e_at(p.x, j)] + theta[e_at(A + p.y, j)] + theta[p_at(t, j)] + theta[b1_at(j)];
    if (t > 0u) {
        z += theta[q_at(tokens[s * L + t - 1u], j)];
    }
    return z;
}

@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = gid.x;
    if (s >= params.answers) {
        return;
    }
    let r = s * L + params.pos;
    for (var j = 0u; j < H; j++) {
        hidden[r * H + j] = max(pre(s, params.pos, j), 0.0);
    }
    for (var v = 0u; v < V; v++) {
        var z = theta[c_at(v)];
        for (var j = 0u; j < H; j++) {
            z += theta[w_at(v, j)] * hidden[r * H + j];
        }
        logits[r * V + v] = z;
    }
}

// A counter-based hash (PCG output function): the same (seed, step, row) always
// gives the same number on every adapter.
fn pcg(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(64)
fn sample(@builtin(global_invocation_id) gid: vec3<u32>) {
    let s = gid.x;
    if (s >= params.answers) {
        return;
    }
    let r = s * L + params.pos;
    var m = logits[r * V];
    for (var v = 1u; v < V; v++) {
        m = max(m, logits[r * V + v]);
    }
    var total = 0.0;
    for (var v = 0u; v < V; v++) {
        total += exp(logits[r * V + v] - m);
    }
    let u = f32(pcg(pcg(params.seed ^ pcg(params.step)) ^ r) >> 8u) / 16777216.0 * total;
    var acc = 0.0;
    var pick = V - 1u;
    for (var v = 0u; v < V; v++) {
        acc += exp(logits[r * V + v] - m);
        if (u < acc) {
            pick = v;
            break;
        }
    }
    tokens[r] = pick;
    if (params.pos == L - 1u) {
        // the answer's digits, most significant first
        let p = prompts[s];
        var sum = p.x + p.y;
        var right = true;
        for (var t = 0u; t < L; t++) {
            right = right && tokens[s * L + L - 1u - t] == sum % 10u;
            sum /= 10u;
        }
        rewards[s] = select(-0.1, 1.0, right);
    }
}

@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= n_params()) {
        return;
    }
    let rows = params.answers * L;
    var g = 0.0;
    if (i >= c_at(0u)) {
        let v = i - c_at(0u);
        for (var r = 0u; r < rows; r++) {
            g += grad_logits[r * V + v];
        }
    } else if (i >= w_at(0u, 0u)) {
        let v = (i - w_at(0u, 0u)) / H;
        let j = (i - w_at(0u, 0u)) % H;
        for (var r = 0u; r < rows; r++) {
            g += grad_logits[r * V + v] * hidden[r * H + j];
        }
    } else {
        // an input of hidden unit j: E[k], P[t], Q[y] or b1, through the rows using it
        let j = i % H;
        let block = i / H;
        for (var r = 0u; r < rows; r++) {
            let s = r / L;
            let t = r % L;
            let p = prompts[s];
            var uses = false;
            if (block < 2u * A) {
                uses = block == p.x || block == A + p.y;
            } else if (block < 2u * A + L) {
                uses = block - 2u * A == t;
            } else if (block < 2u * A + L + V) {
                uses = t > 0u && tokens[r - 1u] == block - 2u * A - L;
            } else {
                uses = true;
            }
            if (uses && hidden[r * H + j] > 0.0) {
                var dh = 0.0;
                for (var v = 0u; v < V; v++) {
                    dh += theta[w_at(v, j)] * grad_logits[r * V + v];
                }
                g += dh;
            }
        }
    }
    moments[i].z = g;
}

// Adam, in its own dispatch: backward reads W while it sums the gradient of the inputs.
@compute @workgroup_size(64)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= n_params()) {
        return;
    }
    var mo = moments[i];
    let g = mo.z;
    mo = vec4<f32>(params.beta1 * mo.x + (1.0 - params.beta1) * g, params.beta2 * mo.y + (1.0 - params.beta2) * g * g, g, 0.0);
    moments[i] = mo;
    let t = f32(params.step + 1u);
    let mhat = mo.x / (1.0 - pow(params.beta1, t));
    let vhat = mo.y / (1.0 - pow(params.beta2, t));
    theta[i] -= params.lr * mhat / (sqrt(vhat) + params.eps);
}
