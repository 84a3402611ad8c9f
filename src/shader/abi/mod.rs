//! The Rust↔WGSL contract, written once. A kernel's uniform blocks, its mode codes,
//! flag bits, record widths and metric slots are declared here in Rust, with
//! [`wgsl_struct!`] and [`wgsl_consts!`]; the WGSL declarations of the same items are
//! generated from those declarations and open every module that uses them
//! ([`Kernel::abi`](super::Kernel)), one file here per shader. The shaders use the
//! names and never restate them; the kernels' host code (`src/kernels/`) fills the
//! blocks.
//!
//! `repr(C)` and WGSL's uniform layout rules can still disagree (a struct member is
//! 16-byte aligned in a uniform, a `vec3` is 16 bytes wide): the tests at the bottom
//! lay every generated declaration out with naga's layouter, in every module of
//! [`shader_variants`](super::variants::shader_variants), and compare it with Rust's offsets.

use std::fmt::Write;

/// A type that has a WGSL name: the scalars, and every [`wgsl_struct!`].
pub(crate) trait WgslType {
    const WGSL: &'static str;
}

impl WgslType for u32 {
    const WGSL: &'static str = "u32";
}

impl WgslType for i32 {
    const WGSL: &'static str = "i32";
}

impl WgslType for f32 {
    const WGSL: &'static str = "f32";
}

/// One member of a declared struct.
#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: &'static str,
    /// Its offset in the Rust struct (`offset_of!`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub offset: usize,
}

/// One declared item of the contract.
#[derive(Debug)]
pub(crate) enum Decl {
    Struct {
        name: &'static str,
        fields: &'static [Field],
        #[cfg_attr(not(test), allow(dead_code))]
        size: usize,
    },
    /// A `u32` or `f32` constant (`ty`), its value widened exactly to f64.
    Const {
        name: &'static str,
        ty: &'static str,
        value: f64,
    },
}

/// The declarations of a kernel's module: slices of [`Decl`], concatenated.
pub(crate) type Abi = &'static [&'static [Decl]];

/// The WGSL text of `abi`: a `struct` per struct, a `const` per constant.
pub(crate) fn wgsl(abi: &[&[Decl]]) -> String {
    let mut s = String::from("// generated from src/shader/abi/'s declarations\n");
    for decl in abi.iter().flat_map(|d| d.iter()) {
        match decl {
            Decl::Struct { name, fields, .. } => {
                let _ = writeln!(s, "struct {name} {{");
                for f in fields.iter() {
                    let _ = writeln!(s, "    {}: {},", f.name, f.ty);
                }
                s.push_str("}\n");
            }
            Decl::Const { name, ty, value } => {
                // f32's Debug is the shortest decimal that reads back to the same bits
                let lit = match *ty {
                    "u32" => format!("{}u", *value as u32),
                    "i32" => format!("{}i", *value as i32),
                    _ => format!("{:?}", *value as f32),
                };
                let _ = writeln!(s, "const {name}: {ty} = {lit};");
            }
        }
    }
    s
}

/// Declares `#[repr(C)]` structs, each with its WGSL twin ([`Decl::Struct`] as
/// `<Name>::DECL`). Members are scalars or other declared structs: uniform arrays
/// would need a 16-byte element stride, so padding is written as scalar `_padN`.
macro_rules! wgsl_struct {
    ($(
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),*
        }

        impl $crate::shader::abi::WgslType for $name {
            const WGSL: &'static str = stringify!($name);
        }

        impl $name {
            /// The WGSL declaration generated from this struct.
            #[allow(dead_code)]
            pub(crate) const DECL: $crate::shader::abi::Decl =
                $crate::shader::abi::Decl::Struct {
                    name: stringify!($name),
                    fields: &[$($crate::shader::abi::Field {
                        name: stringify!($field),
                        ty: <$ty as $crate::shader::abi::WgslType>::WGSL,
                        offset: ::core::mem::offset_of!($name, $field),
                    }),*],
                    size: ::core::mem::size_of::<$name>(),
                };
        }
    )*};
}

/// Declares Rust constants and the slice `$list` of their WGSL twins. A value may be
/// any constant expression (another constant, an enum's code); its type is `u32`,
/// `i32` or `f32`.
macro_rules! wgsl_consts {
    ($list_vis:vis $list:ident; $($(#[$meta:meta])* $vis:vis $name:ident: $ty:ident = $value:expr;)*) => {
        $($(#[$meta])* $vis const $name: $ty = $value;)*

        /// The WGSL declarations of this module's constants.
        $list_vis const $list: &[$crate::shader::abi::Decl] = &[$(
            $crate::shader::abi::Decl::Const {
                name: stringify!($name),
                ty: stringify!($ty),
                value: $name as f64,
            }
        ),*];
    };
}

// wgsl_struct! serves the demo too; wgsl_consts! only the modules below
#[cfg(feature = "tools")]
pub(crate) use wgsl_struct;

pub(crate) mod advantages;
pub(crate) mod aggregate;
pub(crate) mod baseline;
pub(crate) mod combine;
pub(crate) mod head_rows;
pub(crate) mod kept_partials;
pub(crate) mod kept_select;
pub(crate) mod matmul;
pub(crate) mod policy_loss;
pub(crate) mod prepare;
pub(crate) mod reduce;
pub(crate) mod row_partials;
pub(crate) mod row_stats;
pub(crate) mod select;
pub(crate) mod seq_terms;

wgsl_struct! {
    /// `RowLayout` as the shaders see it (prelude.wgsl's `row_start`): offsets relative
    /// to the bound window, strides in elements, all 32-bit.
    #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct LayoutParams {
        pub(crate) offset: u32,
        pub(crate) row_stride: u32,
        pub(crate) seq_stride: u32,
        pub(crate) rows_per_seq: u32,
    }

    /// A part's rows and sequences, and where they start in the scratch buffers (a loss
    /// over logits in several buffers numbers every part's rows and sequences one after
    /// the other): prepare, seq_terms and select run part by part on it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct PartSpan {
        pub rows: u32,
        pub rows_per_seq: u32,
        pub seqs: u32,
        pub part_row: u32,
        pub part_seq: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }

    /// How a one-workgroup kernel deals segments to teams of lanes (rows.rs's
    /// `Teams::new`, workgroup/sum.wgsl's `team_segment`). 16 bytes, as a uniform's
    /// struct member takes (and the member after it starts) on a 16-byte boundary.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
    pub(crate) struct Teams {
        pub size: u32,
        pub rounds: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

wgsl_consts! {
    pub(crate) SHARED;
    /// Which optional per-row inputs a loss call has (prepare's gather, the row kernel,
    /// reduce, select, seq_terms): the low bits of every kernel's `flags`.
    pub(crate) HAS_OLD: u32 = 1;
    pub(crate) HAS_REF: u32 = 2;
    /// f32s per row of `rowout`: logp, entropy, lse, w·L, kl, flags, bad id, τ.
    pub(crate) ROWOUT_FLOATS: u32 = 8;
    /// The slots of a `rowout` row.
    pub(crate) OUT_LOGP: u32 = 0;
    pub(crate) OUT_ENTROPY: u32 = 1;
    pub(crate) OUT_LSE: u32 = 2;
    pub(crate) OUT_LOSS: u32 = 3;
    pub(crate) OUT_KL: u32 = 4;
    pub(crate) OUT_FLAGS: u32 = 5;
    pub(crate) OUT_BAD_ID: u32 = 6;
    /// the row's temperature where it is bad (ROW_BAD_TAU)
    pub(crate) OUT_TAU: u32 = 7;
    /// The row flags in OUT_FLAGS (policy_loss.wgsl writes them, reduce.wgsl counts
    /// them): clipped, dual-clipped, a non-finite loss term, a masked-in token id
    /// outside the vocabulary (the id in OUT_BAD_ID, as u32 bits), a masked-in row
    /// whose per-row temperature is not a positive number (the value in OUT_TAU).
    pub(crate) ROW_CLIPPED: u32 = 1;
    pub(crate) ROW_DUAL: u32 = 2;
    pub(crate) ROW_NONFINITE: u32 = 4;
    pub(crate) ROW_BAD_ID: u32 = 8;
    pub(crate) ROW_BAD_TAU: u32 = 16;
    /// a masked-in row whose target is outside its given kept set (its id in OUT_BAD_ID)
    pub(crate) ROW_NOT_KEPT: u32 = 32;
    /// Items (`vec2<u32>`) of a row's header in the kept scratch (sampler/kept.wgsl).
    pub(crate) KEPT_HEADER: u32 = 4;
    /// The row kernels' `temps` where the call gives no per-row temperatures.
    pub(crate) NO_TEMPS: u32 = 0xffffffff;
}

/// Every declaration shared by all modules.
pub(crate) const COMMON: &[Decl] = &[LayoutParams::DECL, PartSpan::DECL, Teams::DECL];

#[cfg(test)]
mod tests;
