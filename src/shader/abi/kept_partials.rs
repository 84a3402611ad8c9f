//! The contract of `shaders/kept_partials.wgsl` (its host side:
//! `src/kernels/kept_partials.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) x: LayoutParams,
        pub(crate) y: LayoutParams,
        pub(crate) row_base: u32,
        pub(crate) row_end: u32,
        /// these columns: vocab of them, the first being column col_offset of the whole
        /// vocabulary (kept ids are global)
        pub(crate) vocab: u32,
        pub(crate) inv_tau: f32,
        pub(crate) col_offset: u32,
        /// partial of row r at partials[out_offset + r]
        pub(crate) out_offset: u32,
        /// the sampler (sampler/tau_rows.wgsl): row r's temperature at
        /// temperatures[temps + r] (NO_TEMPS: none); the softcap c where > 0
        pub(crate) temps: u32,
        pub(crate) softcap: f32,
        /// the part's CSR: row r's offsets at keep_offsets[offsets_base + r] and the one
        /// after; its ids at keep_ids[ids_base ..], ids_len of them
        pub(crate) offsets_base: u32,
        pub(crate) ids_base: u32,
        pub(crate) ids_len: u32,
        /// where the part's rows start among the call's (the headers, 2 a row, at
        /// kept_out[2·(part_row + r)]), and its pairs at kept_out[pairs ..]
        pub(crate) part_row: u32,
        pub(crate) pairs: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
        pub(crate) _pad2: u32,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
