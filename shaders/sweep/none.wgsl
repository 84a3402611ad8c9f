// Forward only: no gradient is written.
//
// requires: GradCoefs
const GRAD_STEP: u32 = 0u;
fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {}
fn store_elem(i: u32, g: f32) {}
