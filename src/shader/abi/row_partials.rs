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
        /// the sampler (sampler/on.wgsl): row r's temperature at temperatures[temps + r]
        /// (NO_TEMPS: none); the softcap c where > 0
        pub(crate) temps: u32,
        pub(crate) softcap: f32,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
