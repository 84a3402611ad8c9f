// The sampler's per-row temperature read where there are any (params.temps ≠
// NO_TEMPS), whoever holds it: the caller's tensor (sampler/tau_rows.wgsl) or the kept
// sets' row headers (sampler/kept.wgsl), each defining row_tau. A temperature that is
// not a positive number with a finite reciprocal makes the row NaN and flags it.
//
// requires: NO_TEMPS, ROW_BAD_TAU, is_finite, params, quiet_nan, row_tau

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
