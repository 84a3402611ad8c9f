// Logits stored as f32, read four at a time and overwritten by their gradient four at
// a time (rows start on 16-byte boundaries). A lane writes only the quads it read.
@group(0) @binding(0) var<storage, read_write> logits: array<vec4<f32>>;

fn load_logit(i: u32) -> f32 {
    return logits[i >> 2u][i & 3u];
}

fn load_quad(q: u32) -> vec4<f32> {
    return logits[q];
}

fn grad_store_quad(q: u32, g: vec4<f32>, valid: u32) {
    if (valid == 4u) {
        logits[q] = g;
    } else {
        for (var j = 0u; j < valid; j++) {
            logits[q][j] = g[j];
        }
    }
}
