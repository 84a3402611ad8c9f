//! The contract of `shaders/advantages.wgsl` (its host side: `src/kernels/advantages.rs`).

use super::Teams;
use super::{Abi, COMMON, SHARED};

wgsl_struct! {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Params {
        pub(crate) n: u32,
        pub(crate) group: u32,
        pub(crate) estimator: u32,
        pub(crate) in_offset: u32,
        pub(crate) out_offset: u32,
        pub(crate) _pad0: u32,
        pub(crate) _pad1: u32,
        pub(crate) _pad2: u32,
        /// lanes per group
        pub(crate) teams: Teams,
    }
}

wgsl_consts! {
    pub(crate) CONSTS;
    pub(crate) GRPO: u32 = 0;
    pub(crate) GRPO_NO_STD: u32 = 1;
    pub(crate) RLOO: u32 = 2;
    pub(crate) REINFORCE_PP: u32 = 3;
    pub(crate) GPG: u32 = 4;
}

pub(crate) const ABI: Abi = &[COMMON, SHARED, &[Params::DECL], CONSTS];
