// 16-bit floats <-> f32 by hand on the bits, for logits and gradients stored two to a
// u32. Every path (native f16 or packed) and every driver gives the same bits:
// unpack2x16float may flush subnormals, and pack2x16float's rounding is unspecified.
// Which format a kernel reads and writes is an override, so the unused branch is
// compiled away.

override LOGITS_BF16: bool = false;
override GRAD_BF16: bool = false;

fn decode_logit16(h: u32) -> f32 {
    if (LOGITS_BF16) {
        return decode_bf16(h);
    }
    return decode_f16(h);
}

fn encode_grad16(x: f32) -> u32 {
    if (GRAD_BF16) {
        return encode_bf16(x);
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

// Round to nearest even, as the `half` crate does: overflow to inf, tiny values to
// subnormals or signed zero, NaN stays NaN.
fn encode_f16(value: f32) -> u32 {
    let x = bitcast<u32>(value);
    let sign = (x & 0x80000000u) >> 16u;
    let exp = x & 0x7f800000u;
    let man = x & 0x007fffffu;
    if (exp == 0x7f800000u) {
        return sign | 0x7c00u | select(0u, 0x0200u, man != 0u) | (man >> 13u);
    }
    let half_exp = i32(exp >> 23u) - 112;
    if (half_exp >= 31) {
        return sign | 0x7c00u;
    }
    if (half_exp <= 0) {
        if (14 - half_exp > 24) {
            return sign;
        }
        let m = man | 0x00800000u;
        let shift = u32(14 - half_exp);
        let round_bit = 1u << (shift - 1u);
        var h = m >> shift;
        if ((m & round_bit) != 0u && (m & (3u * round_bit - 1u)) != 0u) {
            h += 1u;
        }
        return sign | h;
    }
    let h = sign | (u32(half_exp) << 10u) | (man >> 13u);
    let round_bit = 0x00001000u;
    if ((x & round_bit) != 0u && (x & (3u * round_bit - 1u)) != 0u) {
        return h + 1u;
    }
    return h;
}

// A bf16 is the high half of an f32.
fn decode_bf16(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

// Round to nearest even (as the `half` crate); NaN stays a quiet NaN.
fn encode_bf16(value: f32) -> u32 {
    let x = bitcast<u32>(value);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return ((x >> 16u) | 0x0040u) & 0xffffu;
    }
    return ((x + 0x7fffu + ((x >> 16u) & 1u)) >> 16u) & 0xffffu;
}

// Four gradient values as 16-bit halves of a vec2<u32>; elements from `valid` on keep
// the bits of `old` (a row's last quad: the padding past the row is not ours).
fn pack_quad16(old: vec2<u32>, g: vec4<f32>, valid: u32) -> vec2<u32> {
    if (valid == 4u) {
        return vec2<u32>(
            encode_grad16(g.x) | (encode_grad16(g.y) << 16u),
            encode_grad16(g.z) | (encode_grad16(g.w) << 16u),
        );
    }
    var h = array<u32, 4>(old.x & 0xffffu, old.x >> 16u, old.y & 0xffffu, old.y >> 16u);
    for (var j = 0u; j < valid; j++) {
        h[j] = encode_grad16(g[j]);
    }
    return vec2<u32>(h[0] | (h[1] << 16u), h[2] | (h[3] << 16u));
}

// Four 16-bit logits from the two words of a quad.
fn unpack_quad16(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(
        decode_logit16(w.x & 0xffffu),
        decode_logit16(w.x >> 16u),
        decode_logit16(w.y & 0xffffu),
        decode_logit16(w.y >> 16u),
    );
}
