//! The contract of `shaders/gspo_ratio.wgsl` (its host side: `src/kernels/gspo_ratio.rs`).

use super::{Abi, COMMON, SHARED};
use super::{PartSpan, Teams};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) part: PartSpan,
        pub(crate) has_old: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
        pub(crate) _pad2: u32,
        pub(crate) teams: Teams,
    }
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL]];
