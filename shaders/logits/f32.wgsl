// Logits stored as f32, read-only.
@group(0) @binding(0) var<storage, read> logits: array<f32>;

fn load_logit(i: u32) -> f32 {
    return logits[i];
}
