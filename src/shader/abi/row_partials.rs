//! The contract of `shaders/row_partials.wgsl` (its host side: `src/kernels/row_partials.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) x: LayoutParams,
        pub(crate) y: LayoutParams,
        pub(crate) row_base: u32,
        pub(crate) row_end: u32,
        /// this shard's columns: vocab of them, the first one being column col_offset of
        /// the whole vocabulary
        pub(crate) vocab: u32,
        pub(crate) inv_tau: f32,
        pub(crate) col_offset: u32,
        /// partial of row r at out[out_offset + r], relative to the bound window
        pub(crate) out_offset: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
