// 16-bit logits, two to an atomic u32, overwritten by their gradient; rows anywhere:
// an edge word may hold the neighbouring row's element, which another workgroup reads
// and writes at the same time (logits/packed_atomic.wgsl, store/packed.wgsl).
@group(0) @binding(0) var<storage, read_write> logits: array<atomic<u32>>;

fn out_store(w: u32, bits: u32) {
    atomicStore(&logits[w], bits);
}

fn out_and(w: u32, bits: u32) {
    atomicAnd(&logits[w], bits);
}

fn out_or(w: u32, bits: u32) {
    atomicOr(&logits[w], bits);
}
