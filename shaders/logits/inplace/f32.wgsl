// Logits stored as f32, overwritten by their gradient (a training step needs the
// logits no more after its backward); rows anywhere. Each element is read, then
// written, by one lane (store/f32.wgsl).
@group(0) @binding(0) var<storage, read_write> logits: array<f32>;

fn out_set(i: u32, v: f32) {
    logits[i] = v;
}
