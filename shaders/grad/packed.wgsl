// The gradient into its own buffer of 16-bit values, two to an atomic u32: rows of odd
// length share edge words with their neighbours (store/packed.wgsl).
@group(0) @binding(6) var<storage, read_write> grad: array<atomic<u32>>;

fn out_store(w: u32, bits: u32) {
    atomicStore(&grad[w], bits);
}

fn out_and(w: u32, bits: u32) {
    atomicAnd(&grad[w], bits);
}

fn out_or(w: u32, bits: u32) {
    atomicOr(&grad[w], bits);
}
