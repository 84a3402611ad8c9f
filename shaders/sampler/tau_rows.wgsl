// The sampler's per-row temperatures (SPEC "The sampler's distribution"): row r of the
// part takes τ_r = temperatures[params.temps + r], a window of the caller's tensor
// (params.temps = NO_TEMPS: the call's scalar τ on every row; the binding is then any
// read-only buffer, never read). Everything downstream reads z = s/τ_r.
//
// requires: NO_TEMPS, ROW_BAD_TAU, is_finite, params, quiet_nan

@group(0) @binding(8) var<storage, read> temperatures: array<f32>;

fn row_tau(row: u32) -> f32 {
    return temperatures[params.temps + row];
}

fn tau_ok(t: f32) -> bool {
    return t > 0.0 && is_finite(t) && is_finite(1.0 / t);
}

// 1/τ_r: NaN for a temperature that is not a positive number with a finite
// reciprocal, so that the row's statistics and gradient are NaN
fn sampler_inv_tau(row: u32, scalar: f32) -> f32 {
    if (params.temps == NO_TEMPS) {
        return scalar;
    }
    let t = row_tau(row);
    return select(quiet_nan(), 1.0 / t, tau_ok(t));
}

// The row's flags with ROW_BAD_TAU where a read row's temperature is bad (reduce.wgsl
// then names it, with the value in rowout's OUT_TAU slot).
fn sampler_flags(flags: f32, row: u32, read: bool) -> f32 {
    if (params.temps == NO_TEMPS || !read || tau_ok(row_tau(row))) {
        return flags;
    }
    return flags + f32(ROW_BAD_TAU);
}

// rowout's OUT_TAU slot: the row's temperature (0 without per-row ones)
fn sampler_tau_slot(row: u32) -> f32 {
    if (params.temps == NO_TEMPS) {
        return 0.0;
    }
    return row_tau(row);
}

// the gradient's w/τ: 0 on a row outside the loss whatever its temperature (a bad one
// there is never read), so that its gradient is zeros
fn row_scale(w: f32, inv_tau: f32) -> f32 {
    return select(w * inv_tau, 0.0, w == 0.0);
}

// No kept set: every token is kept (sampler/kept.wgsl has the given one's).
fn kept_target(row: u32) -> bool {
    return true;
}

fn kept_count(lane: u32, row: u32) -> u32 {
    return 0u;
}

fn kept_pair(row: u32, i: u32) -> vec2<u32> {
    return vec2<u32>(0u);
}
