// Forward only: no gradient is written.
fn grad_sweep(lane: u32, xbase: u32, gbase: u32, k: GradCoefs) {}
