//! The Qwen2 model and its checkpoint, on Burn's wgpu device: the forward against an
//! f64 reference of the architecture, the cached forward against the full one, the
//! writer against the loader, and the loader's errors.

mod cache;
mod common;
mod errors;
mod forward;
mod reference;
