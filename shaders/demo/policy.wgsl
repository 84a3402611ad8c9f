// The demo's policy, a tiny MLP that answers "a+b=" with one token:
//
//   h      = relu(E[a] + E[A + b] + b1)          (H hidden units)
//   logits = W h + c                             (V answer tokens, the digits)
//
// forward:  one invocation per sampled answer (row); writes h and the logits
// sample:   one invocation per row: a token from softmax(logits) with a counter-based
//           random number (seed, step, row), and its reward (+1 right, -0.1 wrong)
// backward: one invocation per parameter, summing over rows in a fixed order (no
//           atomics: bitwise reproducible)
// adam:     one invocation per parameter
//
// The loss and its gradient with respect to the logits come from the library.

override H: u32 = 32u;
override V: u32 = 10u;
override A: u32 = 5u;

struct Params {
    rows: u32,
    step: u32,
    seed: u32,
    group: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
// (a, b) of each row
@group(0) @binding(1) var<storage, read> prompts: array<vec2<u32>>;
// E [2A × H], b1 [H], W [V × H], c [V], one flat array
@group(0) @binding(2) var<storage, read_write> theta: array<f32>;
@group(0) @binding(3) var<storage, read_write> hidden: array<f32>;
@group(0) @binding(4) var<storage, read_write> logits: array<f32>;
@group(0) @binding(5) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(6) var<storage, read_write> rewards: array<f32>;
@group(0) @binding(7) var<storage, read_write> grad_logits: array<f32>;
// per parameter: Adam's two moments and the gradient
@group(0) @binding(8) var<storage, read_write> moments: array<vec4<f32>>;

fn e_at(i: u32, j: u32) -> u32 { return i * H + j; }
fn b1_at(j: u32) -> u32 { return 2u * A * H + j; }
fn w_at(v: u32, j: u32) -> u32 { return 2u * A * H + H + v * H + j; }
fn c_at(v: u32) -> u32 { return 2u * A * H + H + V * H + v; }
fn n_params() -> u32 { return 2u * A * H + H + V * H + V; }

@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= params.rows) {
        return;
    }
    let p = prompts[r];
    for (var j = 0u; j < H; j++) {
        hidden[r * H + j] = max(theta[e_at(p.x, j)] + theta[e_at(A + p.y, j)] + theta[b1_at(j)], 0.0);
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
    let r = gid.x;
    if (r >= params.rows) {
        return;
    }
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
    let p = prompts[r];
    rewards[r] = select(-0.1, 1.0, pick == p.x + p.y);
}

@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= n_params()) {
        return;
    }
    var g = 0.0;
    if (i >= c_at(0u)) {
        let v = i - c_at(0u);
        for (var r = 0u; r < params.rows; r++) {
            g += grad_logits[r * V + v];
        }
    } else if (i >= w_at(0u, 0u)) {
        let v = (i - w_at(0u, 0u)) / H;
        let j = (i - w_at(0u, 0u)) % H;
        for (var r = 0u; r < params.rows; r++) {
            g += grad_logits[r * V + v] * hidden[r * H + j];
        }
    } else {
        // E[k, j] (k < 2A) or b1[j]: through the hidden unit j of the rows that use it
        var k = 2u * A;
        var j = i - b1_at(0u);
        if (i < b1_at(0u)) {
            k = i / H;
            j = i % H;
        }
        for (var r = 0u; r < params.rows; r++) {
            let p = prompts[r];
            let uses = k == 2u * A || k == p.x || k == A + p.y;
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

// Adam, in its own dispatch: backward reads W while it sums the gradient of E and b1.
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
