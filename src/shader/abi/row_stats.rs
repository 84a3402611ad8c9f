//! The contract of `shaders/row_stats.wgsl` (its host side: `src/kernels/row_stats.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) x: LayoutParams,
        pub(crate) y: LayoutParams,
        /// the rows of this dispatch (a chunk of all rows, when one binding cannot hold them)
        pub(crate) row_base: u32,
        pub(crate) row_end: u32,
        pub(crate) vocab: u32,
        pub(crate) inv_tau: f32,
        /// first element of each output, relative to its bound window
        pub(crate) lse_offset: u32,
        pub(crate) logp_offset: u32,
        pub(crate) entropy_offset: u32,
        pub(crate) _pad0: u32,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
