//! The WGSL files of `shaders/` a module is joined from, and which of them a pipeline
//! takes. Each file declares its interface in its header: `// requires:` the names it
//! uses that other files (or the generated declarations, `abi`) define. What naga and
//! Tint see stays plain WGSL, the files one after the other; the tests below check,
//! for every variant, that each file's `requires` is exactly what it uses of the
//! others and that every name is defined once.

use super::{GradOut, Kernel, PipelineKey, SamplerMap};
use crate::view::DType;

/// One WGSL file: its path under `shaders/` and its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snippet {
    pub path: &'static str,
    pub source: &'static str,
}

/// How a row kernel's logits are stored and bound (`shaders/logits/`): f32, f16 read
/// natively, or 16-bit values two to a u32; element by element (rows anywhere), or a
/// group of eight in 16-byte loads (quad: rows on group boundaries).
#[derive(Clone, Copy)]
enum Storage {
    F32,
    F32Quad,
    F16,
    F16Quad,
    Packed,
    PackedQuad,
}

impl Storage {
    /// The binding: read-only (`logits/in/`), or read-write with the gradient's stores
    /// in place (`logits/inplace/`).
    fn binding(self, in_place: bool) -> Snippet {
        match (self, in_place) {
            (Storage::F32, false) => shader!("logits/in/f32.wgsl"),
            (Storage::F32Quad, false) => shader!("logits/in/f32_quad.wgsl"),
            (Storage::F16, false) => shader!("logits/in/f16.wgsl"),
            (Storage::F16Quad, false) => shader!("logits/in/f16_quad.wgsl"),
            (Storage::Packed, false) => shader!("logits/in/packed.wgsl"),
            (Storage::PackedQuad, false) => shader!("logits/in/packed_quad.wgsl"),
            (Storage::F32, true) => shader!("logits/inplace/f32.wgsl"),
            (Storage::F32Quad, true) => shader!("logits/inplace/f32_quad.wgsl"),
            (Storage::F16, true) => shader!("logits/inplace/f16.wgsl"),
            (Storage::F16Quad, true) => shader!("logits/inplace/f16_quad.wgsl"),
            (Storage::Packed, true) => shader!("logits/inplace/packed.wgsl"),
            (Storage::PackedQuad, true) => shader!("logits/inplace/packed_quad.wgsl"),
        }
    }

    /// The gradient's stores in this layout (`store/`), written against the accessors
    /// that the binding snippet (`logits/inplace/` or `grad/`) defines.
    fn stores(self) -> Snippet {
        match self {
            Storage::F32 => shader!("store/f32.wgsl"),
            Storage::F32Quad => shader!("store/f32_quad.wgsl"),
            Storage::F16 => shader!("store/f16.wgsl"),
            Storage::F16Quad => shader!("store/f16_quad.wgsl"),
            Storage::Packed => shader!("store/packed.wgsl"),
            Storage::PackedQuad => shader!("store/packed_quad.wgsl"),
        }
    }

    /// A separate gradient's binding (`grad/`), with its accessors.
    fn grad_binding(self) -> Snippet {
        match self {
            Storage::F32 => shader!("grad/f32.wgsl"),
            Storage::F32Quad => shader!("grad/f32_quad.wgsl"),
            Storage::F16 => shader!("grad/f16.wgsl"),
            Storage::F16Quad => shader!("grad/f16_quad.wgsl"),
            Storage::Packed => shader!("grad/packed.wgsl"),
            Storage::PackedQuad => shader!("grad/packed_quad.wgsl"),
        }
    }

    /// How values of `dtype` are stored: natively where they are f32 or f16 with
    /// SHADER_F16, otherwise 16-bit values two to a u32.
    fn of(dtype: DType, native_f16: bool, quad: bool) -> Self {
        match (dtype, quad) {
            (DType::F32, false) => Storage::F32,
            (DType::F32, true) => Storage::F32Quad,
            (_, false) if native_f16 => Storage::F16,
            (_, true) if native_f16 => Storage::F16Quad,
            (_, false) => Storage::Packed,
            (_, true) => Storage::PackedQuad,
        }
    }

    /// The loads; 16-bit rows that may share a word with a neighbour written at the
    /// same time are read as atomics.
    fn loads(self, in_place: bool) -> Snippet {
        match self {
            Storage::F32 => shader!("logits/f32.wgsl"),
            Storage::F32Quad => shader!("logits/f32_quad.wgsl"),
            Storage::F16 => shader!("logits/f16.wgsl"),
            Storage::F16Quad => shader!("logits/f16_quad.wgsl"),
            Storage::Packed if in_place => shader!("logits/packed_atomic.wgsl"),
            Storage::Packed => shader!("logits/packed.wgsl"),
            Storage::PackedQuad => shader!("logits/packed_quad.wgsl"),
        }
    }
}

/// The gradient sweeps (`shaders/sweep/`).
enum Sweep {
    None,
    Groups,
    Words,
}

impl PipelineKey {
    /// How the gradient sweep writes: groups of eight (f32, native f16, and 16-bit
    /// values in rows that share no word), or words of two 16-bit values with atomic
    /// edges (rows that may share a word with a neighbour).
    fn sweep(&self) -> Sweep {
        let packed = |d: DType| d != DType::F32 && !(d == DType::F16 && self.paths.shader_f16);
        match self.grad {
            GradOut::None => Sweep::None,
            GradOut::InPlace if packed(self.logits) && !self.quad => Sweep::Words,
            GradOut::Separate(d) if packed(d) && !self.grad_quad => Sweep::Words,
            _ => Sweep::Groups,
        }
    }

    /// The sampler's map of the logits: its temperatures (the call's one, or each
    /// row's) and its softcap (none, or tanh).
    fn sampler_map(&self) -> Vec<Snippet> {
        let (tau, cap) = match self.sampler {
            SamplerMap::Off => (
                shader!("sampler/tau_scalar.wgsl"),
                shader!("sampler/cap_none.wgsl"),
            ),
            SamplerMap::Temperatures => (
                shader!("sampler/tau_rows.wgsl"),
                shader!("sampler/cap_none.wgsl"),
            ),
            SamplerMap::Softcap => (
                shader!("sampler/tau_rows.wgsl"),
                shader!("sampler/cap_tanh.wgsl"),
            ),
            SamplerMap::Kept => (
                shader!("sampler/kept.wgsl"),
                shader!("sampler/cap_none.wgsl"),
            ),
            SamplerMap::KeptSoftcap => (
                shader!("sampler/kept.wgsl"),
                shader!("sampler/cap_tanh.wgsl"),
            ),
        };
        // every map but the scalar reads each row's temperature where it has one
        let read = (self.sampler != SamplerMap::Off).then_some(shader!("sampler/tau_read.wgsl"));
        [tau].into_iter().chain(read).chain([cap]).collect()
    }

    /// The helpers the kernel's own file uses beyond the prelude: team sums and the
    /// aggregation for the one-workgroup kernels, the policy terms, the computed kept
    /// set's pieces.
    fn kernel_helpers(&self) -> Vec<Snippet> {
        let mut parts = Vec::new();
        if matches!(
            self.kernel,
            Kernel::Advantages
                | Kernel::Baseline(_)
                | Kernel::Prepare
                | Kernel::SeqTerms
                | Kernel::Select
        ) {
            parts.push(shader!("workgroup/sum.wgsl"));
        }
        if matches!(self.kernel, Kernel::Prepare | Kernel::Select) {
            parts.push(shader!("aggregate.wgsl"));
        }
        if matches!(self.kernel, Kernel::PolicyLoss | Kernel::SeqTerms) {
            parts.push(shader!("terms.wgsl"));
        }
        if self.kernel == Kernel::KeptSelect {
            parts.push(shader!("kept/band.wgsl"));
            parts.push(shader!("kept/list.wgsl"));
            parts.push(shader!("kept/trials.wgsl"));
        }
        parts
    }

    /// The files its module is joined from, in order: `enable_f16.wgsl` where the
    /// module reads or writes f16 natively, then how logits are bound, loaded and
    /// stored, the gradient's binding and stores, the sweeps, the prelude, the
    /// workgroup reductions, and the kernel's own file last.
    pub fn snippets(&self) -> Vec<Snippet> {
        // With SHADER_F16, f16 logits and gradients are read and written natively (the
        // widening is exact, the narrowing the hardware's round to nearest even with
        // subnormals: codec.wgsl's bits, tested); otherwise, and for bf16, 16-bit values
        // travel two to a u32 through codec.wgsl.
        let in_place = self.grad == GradOut::InPlace;
        let native_f16 = self.logits == DType::F16 && self.paths.shader_f16;
        let native_grad = self.grad == GradOut::Separate(DType::F16) && self.paths.shader_f16;
        let quad = self.quad;
        let mut parts: Vec<Snippet> = Vec::new();
        if self.kernel.reads_logits() && (native_f16 || native_grad) {
            parts.push(shader!("enable_f16.wgsl"));
        }
        if self.kernel.reads_logits() {
            parts.push(shader!("codec.wgsl"));
            // the logits' binding (read-only, or read-write with the in-place stores),
            // then the loads of its layout
            let storage = Storage::of(self.logits, native_f16, quad);
            parts.push(storage.binding(in_place));
            parts.push(storage.loads(in_place));
            if in_place {
                parts.push(storage.stores());
            }
            match storage {
                Storage::F32 | Storage::F16 | Storage::Packed => {
                    parts.push(shader!("logits/scalar_groups.wgsl"))
                }
                Storage::F32Quad | Storage::F16Quad => {
                    parts.push(shader!("logits/quad_load8.wgsl"))
                }
                Storage::PackedQuad => {}
            }
            if let GradOut::Separate(d) = self.grad {
                let grad = Storage::of(d, native_grad, self.grad_quad);
                parts.push(grad.grad_binding());
                parts.push(grad.stores());
            }
            parts.extend(self.sampler_map());
            parts.push(shader!("stats/groups.wgsl"));
            if self.kernel == Kernel::PolicyLoss {
                parts.push(match self.sweep() {
                    Sweep::None => shader!("sweep/none.wgsl"),
                    Sweep::Groups => shader!("sweep/groups.wgsl"),
                    Sweep::Words => shader!("sweep/words.wgsl"),
                });
            }
        }
        if matches!(self.kernel, Kernel::Matmul { .. } | Kernel::HeadRows { .. }) {
            parts.push(shader!("codec.wgsl"));
        }
        parts.push(shader!("prelude.wgsl"));
        parts.extend(self.kernel_helpers());
        if self.kernel.reads_logits() {
            parts.push(if self.paths.subgroups {
                shader!("workgroup/subgroup.wgsl")
            } else {
                shader!("workgroup/shared.wgsl")
            });
        }
        parts.push(self.kernel.snippet());
        parts
    }
}

#[cfg(test)]
mod tests;
