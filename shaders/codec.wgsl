// 16-bit floats <-> f32 by hand on the bits, for logits and gradients stored two to a
// u32. Every path (native f16 or packed) and every driver gives the same bits: the
// widening is exact and the narrowing rounds to nearest even as the `half` crate does
// (subnormals kept, overflow to inf, NaN stays a quiet NaN). Which format a kernel
// reads and writes is an override, so the unused branch is compiled away.
//
// requires: Group

override LOGITS_BF16: bool = false;
override GRAD_BF16: bool = false;

fn decode_logit16(h: u32) -> f32 {
    if (LOGITS_BF16) {
        return decode_bf16(h);
    }
    return decode_f16(h);
}

// The 16-bit encoding of x in the low half of the result; the high half is zero.
fn encode_grad16(x: f32) -> u32 {
    if (GRAD_BF16) {
        return encode_bf16(x) >> 16u;
    }
    return encode_f16(x);
}

// Exact widening of every f16, subnormals, infinities and NaN included.
fn decode_f16(h: u32) -> f32 {
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

// Round to nearest even without a branch. Normal halves round on the bits; below
// 2^-14 the f32 adder does it, adding 0.5 so that the sum's last bits are the
// subnormal half (exact: the adder rounds to nearest even at 2^-24).
fn encode_f16(value: f32) -> u32 {
    let x = bitcast<u32>(value);
    let sign = (x >> 16u) & 0x8000u;
    let a = x & 0x7fffffffu;
    let normal = min((a - 0x38000000u + 0xfffu + ((a >> 13u) & 1u)) >> 13u, 0x7c00u);
    let tiny = bitcast<u32>(bitcast<f32>(a) + 0.5) - 0x3f000000u;
    let nan = 0x7e00u | ((a >> 13u) & 0x3ffu);
    var h = select(normal, tiny, a < 0x38800000u);
    h = select(h, nan, a > 0x7f800000u);
    return sign | h;
}

// Half `i & 1` of `word` (the 16-bit element i of an array of words) widened:
// kind 1 is f16, 2 bf16.
fn decode_half(kind: u32, word: u32, i: u32) -> f32 {
    let h = (word >> ((i & 1u) * 16u)) & 0xffffu;
    if (kind == 1u) {
        return decode_f16(h);
    }
    return decode_bf16(h);
}

// A bf16 is the high half of an f32.
fn decode_bf16(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

// The bf16 rounding (to nearest even) of x, in the high half of the result (the low
// half is junk). The magnitude is rounded on its bits; a NaN's carry saturates (min),
// so it stays a NaN and never reaches the sign or wraps to zero. (A signalling NaN
// whose payload lies in the low half alone would round to inf; a value computed by
// the kernels is never one.)
fn encode_bf16(value: f32) -> u32 {
    let x = bitcast<u32>(value);
    let a = x & 0x7fffffffu;
    return min(a + 0x7fffu + extractBits(a, 16u, 1u), 0x7fffffffu) | (x & 0x80000000u);
}

// encode_bf16 of a value that is not NaN (the carry cannot reach the sign): two
// integer operations. The sweeps' hot loops take it where the row's coefficients are
// finite, which keeps every gradient of the row a number (sweep/*.wgsl).
fn encode_bf16_number(value: f32) -> u32 {
    let x = bitcast<u32>(value);
    return x + 0x7fffu + extractBits(x, 16u, 1u);
}

// Two gradient values as the halves of a word; `numbers`: neither is NaN.
fn pack2_grad16(lo: f32, hi: f32, numbers: bool) -> u32 {
    if (GRAD_BF16) {
        if (numbers) {
            return (encode_bf16_number(lo) >> 16u) | (encode_bf16_number(hi) & 0xffff0000u);
        }
        return (encode_bf16(lo) >> 16u) | (encode_bf16(hi) & 0xffff0000u);
    }
    return encode_f16(lo) | (encode_f16(hi) << 16u);
}

// A group of eight gradient values as four words.
fn pack_group16(g: Group, numbers: bool) -> vec4<u32> {
    return vec4<u32>(
        pack2_grad16(g.a.x, g.a.y, numbers),
        pack2_grad16(g.a.z, g.a.w, numbers),
        pack2_grad16(g.b.x, g.b.y, numbers),
        pack2_grad16(g.b.z, g.b.w, numbers),
    );
}

// Eight 16-bit logits from four words.
fn unpack_group16(w: vec4<u32>) -> Group {
    if (LOGITS_BF16) {
        let lo = w << vec4<u32>(16u);
        let hi = w & vec4<u32>(0xffff0000u);
        return Group(
            bitcast<vec4<f32>>(vec4<u32>(lo.x, hi.x, lo.y, hi.y)),
            bitcast<vec4<f32>>(vec4<u32>(lo.z, hi.z, lo.w, hi.w)),
        );
    }
    return Group(
        vec4<f32>(decode_f16(w.x & 0xffffu), decode_f16(w.x >> 16u), decode_f16(w.y & 0xffffu), decode_f16(w.y >> 16u)),
        vec4<f32>(decode_f16(w.z & 0xffffu), decode_f16(w.z >> 16u), decode_f16(w.w & 0xffffu), decode_f16(w.w >> 16u)),
    );
}
