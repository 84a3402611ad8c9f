// Logits stored as f16, read two to a u32 (adapters without SHADER_F16, e.g. llvmpipe
// on GL). The bits are widened by hand rather than with unpack2x16float, which may
// flush subnormals: every f16, subnormals, infinities and NaN included, maps exactly.
@group(0) @binding(0) var<storage, read> logits: array<u32>;

fn load_logit(i: u32) -> f32 {
    let h = (logits[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // zero or subnormal: m * 2^-24, exact in f32 (and a normal f32 unless zero)
        return bitcast<f32>(bitcast<u32>(f32(m) * 5.9604644775390625e-8) | sign);
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
