// Logits stored as f32, read four at a time (rows start on 16-byte boundaries): one
// 16-byte load per lane and step instead of four.
@group(0) @binding(0) var<storage, read> logits: array<vec4<f32>>;

fn load_logit(i: u32) -> f32 {
    return logits[i >> 2u][i & 3u];
}

fn load_quad(q: u32) -> vec4<f32> {
    return logits[q];
}
