//! The contract of `shaders/matmul.wgsl` (its host side: `src/kernels/matmul.rs`).

use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct MatmulParams {
        /// C is m × n; the sum runs over k
        pub(crate) m: u32,
        pub(crate) n: u32,
        pub(crate) k: u32,
        pub(crate) flags: u32,
        /// A[i, k] is element a_offset + i·a_row + k·a_col of its binding (the
        /// pipeline knows which stride is 1)
        pub(crate) a_offset: u32,
        pub(crate) a_row: u32,
        pub(crate) a_col: u32,
        /// B[k, j] is element b_offset + k·b_row + j·b_col
        pub(crate) b_offset: u32,
        pub(crate) b_row: u32,
        pub(crate) b_col: u32,
        /// C[i, j] is element c_offset + i·c_row + j (f32)
        pub(crate) c_offset: u32,
        pub(crate) c_row: u32,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    /// flags: C += A·B (else C = A·B)
    pub(crate) MM_ACCUMULATE: u32 = 1;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[MatmulParams::DECL], CONSTS];
