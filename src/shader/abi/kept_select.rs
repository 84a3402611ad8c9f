//! The contract of `shaders/kept_select.wgsl` (its host side:
//! `src/kernels/kept_select.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) x: LayoutParams,
        pub(crate) y: LayoutParams,
        pub(crate) row_base: u32,
        pub(crate) row_end: u32,
        pub(crate) vocab: u32,
        pub(crate) inv_tau: f32,
        /// the sampler (sampler/tau_rows.wgsl): row r's temperature at
        /// temperatures[temps + r] (NO_TEMPS: none); the softcap c where > 0
        pub(crate) temps: u32,
        pub(crate) softcap: f32,
        /// where the part's rows start among the call's (the headers, KEPT_HEADER items
        /// a row, at kept_out[KEPT_HEADER·(part_row + r)])
        pub(crate) part_row: u32,
        /// the rules (docs/MATH.md#computed-kept-sets): top_k 0 off, top_p 1 off,
        /// min_p 0 off
        pub(crate) top_k: u32,
        pub(crate) top_p: f32,
        pub(crate) min_p: f32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
