//! The contract of `shaders/baseline.wgsl` and `shaders/copy.wgsl` (its host side: `src/kernels/baseline.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) x: LayoutParams,
        pub(crate) row_base: u32,
        pub(crate) row_end: u32,
        pub(crate) vocab: u32,
        pub(crate) rows: u32,
        /// element offset of row_base in the [T,V] f32 intermediates' bound window
        pub(crate) full_offset: u32,
        /// element of the first row's token id in the targets' bound window
        pub(crate) y_offset: u32,
        pub(crate) _pad1: u32,
        pub(crate) _pad2: u32,
    }
}

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct CopyParams {
        pub(crate) count: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
        pub(crate) _pad2: u32,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
pub(crate) const COPY_ABI: Abi = &[COMMON, SHARED, &[CopyParams::DECL]];
