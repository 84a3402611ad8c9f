// A plain f32 sum over the workgroup along a fixed tree (lane i takes lane i + s),
// so it is bitwise reproducible. Every lane gets the total.

var<workgroup> wg_sum: array<f32, WG_SIZE>;

fn workgroup_sum(lane: u32, v: f32) -> f32 {
    wg_sum[lane] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            wg_sum[lane] += wg_sum[lane + s];
        }
        workgroupBarrier();
    }
    let total = wg_sum[0];
    workgroupBarrier(); // wg_sum may be reused by the caller
    return total;
}
