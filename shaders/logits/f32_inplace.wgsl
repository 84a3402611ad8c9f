// Logits stored as f32, overwritten by their gradient (the logits are not needed after
// a training step's backward). Each element is read, then written, by one lane.
@group(0) @binding(0) var<storage, read_write> logits: array<f32>;

fn load_logit(i: u32) -> f32 {
    return logits[i];
}

fn grad_store(i: u32, g: f32) {
    logits[i] = g;
}
