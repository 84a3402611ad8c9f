// The fused linear head's row moves between the caller's strided tensors and the dense
// f32 matrices its matmuls read and write (docs/MATH.md#the-fused-linear-head):
//
//   gather_rows   a chunk of hidden rows (any RowLayout, f32/f16/bf16) → dense f32
//                 [rows, cols]; the logits' matmul and ∂L/∂W's read it
//   scatter_rows  dense f32 [rows, cols] → the caller's rows in their dtype, each
//                 value rounded once (∂L/∂h per chunk, ∂L/∂W at the end)
//
// With HR_MASK, a row whose mask is 0 moves as zeros: its hidden row (NaN or not)
// then cannot reach ∂L/∂W through 0·NaN, and its ∂L/∂h row is exactly 0 even where a
// non-finite lm_head makes every product NaN. A NaN mask is bad input and keeps the
// row (its NaN must show). One workgroup moves one row, so 16-bit rows that share a
// word at their edges (odd widths) meet only there: edge words are updated one half
// at a time (and, or) and the neighbour's half is never disturbed; the final bits do
// not depend on the order. Both entries bind the strided tensor as atomic words.
//
// requires: HR_MASK, HeadRowsParams, WG_SIZE, decode_half, encode_bf16, encode_f16, grid_index, row_start

// The strided tensor's dtype: 0 f32, 1 f16, 2 bf16.
override KIND: u32 = 0u;

@group(0) @binding(0) var<uniform> params: HeadRowsParams;
@group(0) @binding(1) var<storage, read> rowin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dense: array<f32>;
@group(0) @binding(3) var<storage, read_write> strided: array<atomic<u32>>;

fn keeps(i: u32) -> bool {
    if ((params.flags & HR_MASK) == 0u) {
        return true;
    }
    return rowin[params.mask_row + i].x != 0.0;
}

fn load_elem(e: u32) -> f32 {
    if (KIND == 0u) {
        return bitcast<f32>(atomicLoad(&strided[e]));
    }
    return decode_half(KIND, atomicLoad(&strided[e >> 1u]), e);
}

// The row a workgroup moves: whether it moves as itself (else as zeros), where it
// starts in the strided tensor and in the dense matrix.
struct Moved {
    keep: bool,
    strided: u32,
    dense: u32,
}

fn moved(i: u32) -> Moved {
    let s = row_start(params.rows_of, params.first + i);
    return Moved(keeps(i), s, params.dense_offset + i * params.cols);
}

// The 16-bit encoding of v in the low half.
fn encode_half(v: f32) -> u32 {
    if (KIND == 1u) {
        return encode_f16(v);
    }
    return encode_bf16(v) >> 16u;
}

@compute @workgroup_size(WG_SIZE)
fn gather_rows(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = grid_index(wid, nwg);
    if (i >= params.rows) {
        return;
    }
    let m = moved(i);
    for (var c = lane; c < params.cols; c += WG_SIZE) {
        var v = 0.0;
        if (m.keep) {
            v = load_elem(m.strided + c);
        }
        dense[m.dense + c] = v;
    }
}

@compute @workgroup_size(WG_SIZE)
fn scatter_rows(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = grid_index(wid, nwg);
    if (i >= params.rows) {
        return;
    }
    let m = moved(i);
    let keep = m.keep;
    let s = m.strided;
    let d = m.dense;
    if (KIND == 0u) {
        for (var c = lane; c < params.cols; c += WG_SIZE) {
            atomicStore(&strided[s + c], bitcast<u32>(select(0.0, dense[d + c], keep)));
        }
        return;
    }
    let end = s + params.cols;
    for (var w = (s >> 1u) + lane; 2u * w < end; w += WG_SIZE) {
        var bits = 0u;
        var mask = 0u;
        for (var h = 0u; h < 2u; h++) {
            let e = 2u * w + h;
            if (e >= s && e < end) {
                let v = select(0.0, dense[d + e - s], keep);
                bits |= encode_half(v) << (16u * h);
                mask |= 0xffffu << (16u * h);
            }
        }
        if (mask == 0xffffffffu) {
            atomicStore(&strided[w], bits);
        } else {
            atomicAnd(&strided[w], ~mask);
            atomicOr(&strided[w], bits);
        }
    }
}
