// A portable tiled matrix product for the fused linear head (SPEC "Fused linear head"):
//
//   C[m, n] (+)= Σ_k A[m, k] · B[k, n]      products and sums in f32, k in order
//
// Each operand is read through its strides, so one kernel makes the head's three
// products: the logits x = h·Wᵀ (B[k, n] = W[n, k]), ∂L/∂h = Gz·W and ∂L/∂W = Gzᵀ·h
// (A[m, k] = Gz[k, m]). A workgroup computes a 64 × 64 tile of C: 16 × 16 lanes, each
// a 4 × 4 block held in registers; A and B pass through workgroup memory 16 values of
// k at a time, so each lane does 16 FMAs per two vec4 reads of workgroup memory (the
// register tiling the gpu-isa FMA share measures). The sum over k runs in the same
// order for every element and every dispatch: bitwise reproducible, whatever else the
// dispatch holds. A and B are f32, f16 or bf16 (A_KIND, B_KIND: 0, 1, 2; 16-bit
// values two to a u32, as codec.wgsl reads them).
//
// requires: MM_ACCUMULATE, MM_A_K_CONTIG, MM_B_N_CONTIG, MatmulParams, WG_SIZE
// requires: decode_bf16, decode_f16

override A_KIND: u32 = 0u;
override B_KIND: u32 = 0u;

const TILE: u32 = 64u;
const TK: u32 = 16u;

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> mat_a: array<u32>;
@group(0) @binding(2) var<storage, read> mat_b: array<u32>;
@group(0) @binding(3) var<storage, read_write> mat_c: array<f32>;

// [k][m / 4] and [k][n / 4]: a lane's four rows (columns) are one vec4
var<workgroup> tile_a: array<vec4<f32>, 256>;
var<workgroup> tile_b: array<vec4<f32>, 256>;

fn widen(kind: u32, word: u32, i: u32) -> f32 {
    let h = (word >> ((i & 1u) * 16u)) & 0xffffu;
    if (kind == 1u) {
        return decode_f16(h);
    }
    return decode_bf16(h);
}

fn load_a(i: u32) -> f32 {
    if (A_KIND == 0u) {
        return bitcast<f32>(mat_a[i]);
    }
    return widen(A_KIND, mat_a[i >> 1u], i);
}

fn load_b(i: u32) -> f32 {
    if (B_KIND == 0u) {
        return bitcast<f32>(mat_b[i]);
    }
    return widen(B_KIND, mat_b[i >> 1u], i);
}

// Element e (0 .. TILE·TK) of a tile, as (row or column, k): consecutive lanes take
// consecutive addresses of whichever index is contiguous in memory.
fn tile_pos(e: u32, k_contig: bool) -> vec2<u32> {
    if (k_contig) {
        return vec2<u32>(e / TK, e % TK);
    }
    return vec2<u32>(e % TILE, e / TILE);
}

// The A and B tiles of k0 .. k0 + TK into workgroup memory (0 past the edges).
fn load_tiles(lane: u32, m0: u32, n0: u32, k0: u32) {
    let p = params;
    for (var q = 0u; q < 4u; q++) {
        let e = lane + q * 256u;
        let ma = tile_pos(e, (p.flags & MM_A_K_CONTIG) != 0u);
        var va = 0.0;
        if (m0 + ma.x < p.m && k0 + ma.y < p.k) {
            va = load_a(p.a_offset + (m0 + ma.x) * p.a_row + (k0 + ma.y) * p.a_col);
        }
        tile_a[ma.y * 16u + ma.x / 4u][ma.x % 4u] = va;
        let nb = tile_pos(e, (p.flags & MM_B_N_CONTIG) == 0u);
        var vb = 0.0;
        if (n0 + nb.x < p.n && k0 + nb.y < p.k) {
            vb = load_b(p.b_offset + (k0 + nb.y) * p.b_row + (n0 + nb.x) * p.b_col);
        }
        tile_b[nb.y * 16u + nb.x / 4u][nb.x % 4u] = vb;
    }
}

// WG_SIZE is 256 here: lane = 16·ty + tx computes rows 4·ty .. +4, columns 4·tx .. +4
@compute @workgroup_size(WG_SIZE)
fn matmul(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let lid = vec2<u32>(lane % 16u, lane / 16u);
    let m0 = wid.y * TILE;
    let n0 = wid.x * TILE;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < params.k; k0 += TK) {
        load_tiles(lane, m0, n0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = tile_a[kk * 16u + lid.y];
            let bv = tile_b[kk * 16u + lid.x];
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }
    let accumulate = (params.flags & MM_ACCUMULATE) != 0u;
    for (var i = 0u; i < 4u; i++) {
        let row = m0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + lid.x * 4u + j;
            if (row < params.m && col < params.n) {
                let at = params.c_offset + row * params.c_row + col;
                mat_c[at] = select(acc[i][j], mat_c[at] + acc[i][j], accumulate);
            }
        }
    }
}
