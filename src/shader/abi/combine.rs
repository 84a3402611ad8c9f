//! The contract of `shaders/combine.wgsl` (its host side: `src/kernels/combine.rs`).

use super::LayoutParams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) y: LayoutParams,
        pub(crate) row_base: u32,
        pub(crate) row_end: u32,
        /// the partial of shard k for row r is partials[in_offset + k·in_stride + r]
        pub(crate) shards: u32,
        pub(crate) in_offset: u32,
        pub(crate) in_stride: u32,
        pub(crate) mode: u32,
        /// STATS: rowout row part_row + r; PARTIAL: out[out_offset + r]
        pub(crate) part_row: u32,
        pub(crate) out_offset: u32,
        /// ROW_STATS: out_lse[lse_offset + r], ...
        pub(crate) lse_offset: u32,
        pub(crate) logp_offset: u32,
        pub(crate) entropy_offset: u32,
        pub(crate) _pad: u32,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    pub(crate) MODE_STATS: u32 = 0;
    pub(crate) MODE_PARTIAL: u32 = 1;
    pub(crate) MODE_ROW_STATS: u32 = 2;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL], CONSTS];
