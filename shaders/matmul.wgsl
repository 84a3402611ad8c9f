// A portable tiled matrix product for the fused linear head
// (docs/MATH.md#the-fused-linear-head):
//
//   C[m, n] (+)= Σ_k A[m, k] · B[k, n]      products and sums in f32, k in order
//
// Each operand is read through its strides, so one kernel makes the head's three
// products: the logits x = h·Wᵀ (B[k, n] = W[n, k]), ∂L/∂h = Gz·W and ∂L/∂W = Gzᵀ·h
// (A[m, k] = Gz[k, m]). On a GPU a workgroup computes a 128 × 128 tile of C: 16 × 16
// lanes, each an 8 × 8 block held in registers; A and B pass through workgroup memory
// 8 values of k at a time, so each lane does 64 FMAs per four vec4 reads of workgroup
// memory and loads 8 elements per 512 FMAs (the register tiling the gpu-isa FMA share
// measures). A CPU rasteriser (LANE_BLOCKS) runs 8 lanes at once in one 256-bit SIMD
// register per value: 64 accumulators a lane would need 64 of its 16 registers and
// spill on every FMA, and LLVM takes seconds to allocate them. There the tile is
// 32 × 32: 8 × 8 lanes, each a 4 × 4 block (16 accumulators, 16 registers for a SIMD
// batch of lanes). MM_TILE and MM_BLOCK are set together by the host (PipelineKey).
// Which index of A and B is contiguous is an override (the three products have fixed
// layouts), and tiles that lie inside every edge skip the bounds checks. The sum over k runs in the same
// order for every element and every dispatch: bitwise reproducible, whatever else the
// dispatch holds. A and B are f32, f16 or bf16 (A_KIND, B_KIND: 0, 1, 2; 16-bit
// values two to a u32, as codec.wgsl reads them).
//
// requires: MM_ACCUMULATE, MatmulParams, WG_SIZE, decode_half

override A_KIND: u32 = 0u;
override B_KIND: u32 = 0u;
// A[m, k] has k contiguous (a_col = 1; else m is: a_row = 1); B[k, n] has n contiguous
override A_K_CONTIG: bool = true;
override B_N_CONTIG: bool = true;

// the side of C's tile, and of a lane's block of it: 128 and 8 (GPUs) or 32 and 4
// (CPU adapters); WG_SIZE = (MM_TILE / MM_BLOCK)², and each lane feeds four elements
// of each operand's tile per step of k either way (MM_TILE · TK = 4 · WG_SIZE)
override MM_TILE: u32 = 128u;
override MM_BLOCK: u32 = 8u;
const TK: u32 = 8u;

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> mat_a: array<u32>;
@group(0) @binding(2) var<storage, read> mat_b: array<u32>;
@group(0) @binding(3) var<storage, read_write> mat_c: array<f32>;

// [k][m / 4] and [k][n / 4], sized for the GPU tile: a lane's eight rows (columns)
// are two vec4 (one of four rows on CPU adapters, which use the first 8 of each row). Two
// dimensions, so that mac's reads are a constant row (folded into the load's offset)
// and one of four lane-invariant columns: the index clamps of a checked module are
// computed once, not once per read.
var<workgroup> tile_a: array<array<vec4<f32>, 32>, 8>;
var<workgroup> tile_b: array<array<vec4<f32>, 32>, 8>;

fn load_a(i: u32) -> f32 {
    if (A_KIND == 0u) {
        return bitcast<f32>(mat_a[i]);
    }
    return decode_half(A_KIND, mat_a[i >> 1u], i);
}

fn load_b(i: u32) -> f32 {
    if (B_KIND == 0u) {
        return bitcast<f32>(mat_b[i]);
    }
    return decode_half(B_KIND, mat_b[i >> 1u], i);
}

// What one lane feeds into a tile at each step of k, fixed for the whole sum: for each
// of its four elements (q), the element of k = 0 in the operand (`at`; k0 adds
// k0·`k_stride`), its k within the step, whether its row (column) lies inside the
// operand, and its place in the tile.
struct Feed {
    at: vec4<u32>,
    k: vec4<u32>,
    inside: vec4<bool>,
    slot: vec4<u32>,
    comp: vec4<u32>,
    k_stride: u32,
}

// Element e (0 .. MM_TILE·TK) of a tile, as (row or column, k): consecutive lanes take
// consecutive addresses of whichever index is contiguous in memory.
fn tile_pos(e: u32, k_contig: bool) -> vec2<u32> {
    if (k_contig) {
        return vec2<u32>(e / TK, e % TK);
    }
    return vec2<u32>(e % MM_TILE, e / MM_TILE);
}

// A's feed for the tile of rows m0 ..: A[m, k] = a_offset + m·a_row + k·a_col.
fn feed_a(lane: u32, m0: u32) -> Feed {
    var f: Feed;
    for (var q = 0u; q < 4u; q++) {
        let p = tile_pos(lane + q * WG_SIZE, A_K_CONTIG);
        let row = m0 + p.x;
        f.at[q] = params.a_offset + row * params.a_row + p.y * params.a_col;
        f.k[q] = p.y;
        f.inside[q] = row < params.m;
        f.slot[q] = p.y * 32u + p.x / 4u;
        f.comp[q] = p.x % 4u;
    }
    f.k_stride = params.a_col;
    return f;
}

// B's feed for the tile of columns n0 ..: B[k, n] = b_offset + k·b_row + n·b_col.
fn feed_b(lane: u32, n0: u32) -> Feed {
    var f: Feed;
    for (var q = 0u; q < 4u; q++) {
        let p = tile_pos(lane + q * WG_SIZE, !B_N_CONTIG);
        let col = n0 + p.x;
        f.at[q] = params.b_offset + p.y * params.b_row + col * params.b_col;
        f.k[q] = p.y;
        f.inside[q] = col < params.n;
        f.slot[q] = p.y * 32u + p.x / 4u;
        f.comp[q] = p.x % 4u;
    }
    f.k_stride = params.b_row;
    return f;
}

// The A and B tiles of k0 .. k0 + TK into workgroup memory (0 past the edges, which
// only tiles that reach an edge check).
fn load_tiles(fa: Feed, fb: Feed, k0: u32, inside: bool) {
    for (var q = 0u; q < 4u; q++) {
        var va = 0.0;
        if (inside || (fa.inside[q] && k0 + fa.k[q] < params.k)) {
            va = load_a(fa.at[q] + k0 * fa.k_stride);
        }
        tile_a[fa.slot[q] / 32u][fa.slot[q] % 32u][fa.comp[q]] = va;
        var vb = 0.0;
        if (inside || (fb.inside[q] && k0 + fb.k[q] < params.k)) {
            vb = load_b(fb.at[q] + k0 * fb.k_stride);
        }
        tile_b[fb.slot[q] / 32u][fb.slot[q] % 32u][fb.comp[q]] = vb;
    }
}

// Step kk of a tile: the lane's block += its rows' A values × its columns' B. The
// branch is on override constants: each pipeline holds one of the two bodies.
fn mac(acc: ptr<function, array<vec4<f32>, 16>>, kk: u32, lid: vec2<u32>) {
    if (MM_BLOCK == 4u) {
        let a = tile_a[kk][lid.y];
        let b = tile_b[kk][lid.x];
        (*acc)[0] = fma(vec4<f32>(a.x), b, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(a.y), b, (*acc)[1]);
        (*acc)[2] = fma(vec4<f32>(a.z), b, (*acc)[2]);
        (*acc)[3] = fma(vec4<f32>(a.w), b, (*acc)[3]);
        return;
    }
    let a0 = tile_a[kk][2u * lid.y];
    let a1 = tile_a[kk][2u * lid.y + 1u];
    let b0 = tile_b[kk][2u * lid.x];
    let b1 = tile_b[kk][2u * lid.x + 1u];
    (*acc)[0] = fma(vec4<f32>(a0.x), b0, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a0.x), b1, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a0.y), b0, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a0.y), b1, (*acc)[3]);
    (*acc)[4] = fma(vec4<f32>(a0.z), b0, (*acc)[4]);
    (*acc)[5] = fma(vec4<f32>(a0.z), b1, (*acc)[5]);
    (*acc)[6] = fma(vec4<f32>(a0.w), b0, (*acc)[6]);
    (*acc)[7] = fma(vec4<f32>(a0.w), b1, (*acc)[7]);
    (*acc)[8] = fma(vec4<f32>(a1.x), b0, (*acc)[8]);
    (*acc)[9] = fma(vec4<f32>(a1.x), b1, (*acc)[9]);
    (*acc)[10] = fma(vec4<f32>(a1.y), b0, (*acc)[10]);
    (*acc)[11] = fma(vec4<f32>(a1.y), b1, (*acc)[11]);
    (*acc)[12] = fma(vec4<f32>(a1.z), b0, (*acc)[12]);
    (*acc)[13] = fma(vec4<f32>(a1.z), b1, (*acc)[13]);
    (*acc)[14] = fma(vec4<f32>(a1.w), b0, (*acc)[14]);
    (*acc)[15] = fma(vec4<f32>(a1.w), b1, (*acc)[15]);
}

// One step of k: the tiles into workgroup memory, then TK multiply-adds of each
// lane's block; unrolled by hand: a loop this small would spend as much on its counter
// (and the loop bound a checked module adds) as on its FMAs.
fn k_step(
    acc: ptr<function, array<vec4<f32>, 16>>,
    feeds: array<Feed, 2>,
    lid: vec2<u32>,
    k0: u32,
    inside: bool,
) {
    load_tiles(feeds[0], feeds[1], k0, inside);
    workgroupBarrier();
    mac(acc, 0u, lid);
    mac(acc, 1u, lid);
    mac(acc, 2u, lid);
    mac(acc, 3u, lid);
    mac(acc, 4u, lid);
    mac(acc, 5u, lid);
    mac(acc, 6u, lid);
    mac(acc, 7u, lid);
    workgroupBarrier();
}

// lane = side·ty + tx (side = MM_TILE / MM_BLOCK lanes) computes rows MM_BLOCK·ty ..
// and columns MM_BLOCK·tx .. of the tile
@compute @workgroup_size(WG_SIZE)
fn matmul(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let side = MM_TILE / MM_BLOCK;
    let lid = vec2<u32>(lane % side, lane / side);
    let m0 = wid.y * MM_TILE;
    let n0 = wid.x * MM_TILE;
    let tile_inside = m0 + MM_TILE <= params.m && n0 + MM_TILE <= params.n;
    // GPUs: acc[2r + h] is row 8·ty + r, columns 8·tx + 4h .. +4; CPU adapters: acc[r]
    // is row 4·ty + r, columns 4·tx .. +4
    var acc: array<vec4<f32>, 16>;
    let feeds = array<Feed, 2>(feed_a(lane, m0), feed_b(lane, n0));
    for (var i = 0u; i < 16u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    if (tile_inside) {
        // the hot loop: whole tiles, no bounds checks; then the last partial step of k
        let k_whole = params.k / TK * TK;
        for (var k0 = 0u; k0 < k_whole; k0 += TK) {
            k_step(&acc, feeds, lid, k0, true);
        }
        if (k_whole < params.k) {
            k_step(&acc, feeds, lid, k_whole, false);
        }
    } else {
        for (var k0 = 0u; k0 < params.k; k0 += TK) {
            k_step(&acc, feeds, lid, k0, false);
        }
    }
    let row = m0 + lid.y * MM_BLOCK;
    let col = n0 + lid.x * MM_BLOCK;
    if (MM_BLOCK == 4u) {
        store_row(row, col, acc[0], vec4<f32>(0.0), 4u);
        store_row(row + 1u, col, acc[1], vec4<f32>(0.0), 4u);
        store_row(row + 2u, col, acc[2], vec4<f32>(0.0), 4u);
        store_row(row + 3u, col, acc[3], vec4<f32>(0.0), 4u);
        return;
    }
    store_row(row, col, acc[0], acc[1], 8u);
    store_row(row + 1u, col, acc[2], acc[3], 8u);
    store_row(row + 2u, col, acc[4], acc[5], 8u);
    store_row(row + 3u, col, acc[6], acc[7], 8u);
    store_row(row + 4u, col, acc[8], acc[9], 8u);
    store_row(row + 5u, col, acc[10], acc[11], 8u);
    store_row(row + 6u, col, acc[12], acc[13], 8u);
    store_row(row + 7u, col, acc[14], acc[15], 8u);
}

// A lane's `width` values of one row of C (columns col ..), those inside C. The
// accumulators are named by constants only: a dynamic index into them would put them
// in memory (scratch on GPUs, the stack on CPU drivers) for the whole kernel.
fn store_row(row: u32, col: u32, lo: vec4<f32>, hi: vec4<f32>, width: u32) {
    if (row >= params.m) {
        return;
    }
    let accumulate = (params.flags & MM_ACCUMULATE) != 0u;
    let base = params.c_offset + row * params.c_row + col;
    let v = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    for (var j = 0u; j < width; j++) {
        if (col + j < params.n) {
            mat_c[base + j] = select(v[j], mat_c[base + j] + v[j], accumulate);
        }
    }
}
