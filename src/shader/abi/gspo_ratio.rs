//! The contract of `shaders/gspo_ratio.wgsl` (its host side: `src/kernels/gspo_ratio.rs`).

use super::Teams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        /// this part's rows and sequences, and where they start in the scratch buffers
        pub(crate) rows: u32,
        pub(crate) rows_per_seq: u32,
        pub(crate) seqs: u32,
        pub(crate) has_old: u32,
        pub(crate) part_row: u32,
        pub(crate) part_seq: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
        pub(crate) teams: Teams,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
