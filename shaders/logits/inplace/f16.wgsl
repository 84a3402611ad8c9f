// Logits stored as f16, read natively and overwritten by their gradient in f16
// (SHADER_F16); rows anywhere (store/f16.wgsl).
@group(0) @binding(0) var<storage, read_write> logits: array<f16>;

fn out_set(i: u32, v: f16) {
    logits[i] = v;
}
