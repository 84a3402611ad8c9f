//! The contract of `shaders/head_rows.wgsl` (its host side: `src/kernels/head_rows.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct HeadRowsParams {
        /// the strided tensor's rows, relative to its bound window
        pub(crate) rows_of: LayoutParams,
        /// rows moved, and the elements of each
        pub(crate) rows: u32,
        pub(crate) cols: u32,
        /// the layout's row of the first row moved
        pub(crate) first: u32,
        /// rowin's row of the first row moved (with HR_MASK)
        pub(crate) mask_row: u32,
        pub(crate) flags: u32,
        /// the dense matrix's first element in its binding
        pub(crate) dense_offset: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    /// flags: rows whose mask (rowin's x) is 0 move as zeros
    pub(crate) HR_MASK: u32 = 1;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[HeadRowsParams::DECL], CONSTS];
