// 16-bit logits overwritten by their gradient a group (16 bytes) at a time (rows start
// on 16-byte boundaries, so no two rows share a word: plain loads and stores;
// store/packed_quad.wgsl).
@group(0) @binding(0) var<storage, read_write> logits: array<vec4<u32>>;

fn out_word(i: u32, k: u32) -> u32 {
    return logits[i][k];
}

fn out_set1(i: u32, k: u32, w: u32) {
    logits[i][k] = w;
}

fn out_set4(i: u32, v: vec4<u32>) {
    logits[i] = v;
}
