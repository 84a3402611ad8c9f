//! One module per shader: its bind layout, uniforms and dispatch. The WGSL lives in
//! `shaders/`; a kernel's source is the concatenation of a dtype snippet (how to load
//! a logit), the shared prelude, a reduction snippet (shared memory or subgroups) and
//! the kernel itself. Workgroup size is an `override` constant set at pipeline build.

pub(crate) mod row_stats;

use crate::context::{Paths, ROW_WORKGROUP};
use crate::error::{Error, Result};
use crate::view::DType;

const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");
const REDUCE_SHARED: &str = include_str!("../../shaders/reduce/shared.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/reduce/subgroup.wgsl");
const LOAD_F32: &str = include_str!("../../shaders/dtype/f32.wgsl");
const LOAD_F16: &str = include_str!("../../shaders/dtype/f16.wgsl");
const LOAD_F16_PACKED: &str = include_str!("../../shaders/dtype/f16_packed.wgsl");
const LOAD_BF16: &str = include_str!("../../shaders/dtype/bf16.wgsl");

/// The kernels of the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    RowStats,
}

impl Kernel {
    pub const ALL: [Kernel; 1] = [Kernel::RowStats];

    fn source(self) -> &'static str {
        match self {
            Kernel::RowStats => include_str!("../../shaders/row_stats.wgsl"),
        }
    }

    fn entry_point(self) -> &'static str {
        match self {
            Kernel::RowStats => "row_stats",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub kernel: Kernel,
    pub dtype: DType,
    pub paths: Paths,
}

/// The full WGSL of `kernel` for `dtype` on `paths`. `enable f16;` must open the
/// module, so the dtype snippet comes first.
pub fn shader_source(kernel: Kernel, dtype: DType, paths: Paths) -> String {
    let load = match dtype {
        DType::F32 => LOAD_F32,
        DType::F16 if paths.shader_f16 => LOAD_F16,
        DType::F16 => LOAD_F16_PACKED,
        DType::Bf16 => LOAD_BF16,
    };
    let reduce = if paths.subgroups {
        REDUCE_SUBGROUP
    } else {
        REDUCE_SHARED
    };
    [load, PRELUDE, reduce, kernel.source()].join("\n")
}

/// Every distinct shader the crate can build, with the paths it needs: what the
/// portability test feeds to naga's back ends.
pub fn shader_variants() -> Vec<(String, Paths, String)> {
    let mut out = Vec::new();
    for kernel in Kernel::ALL {
        for dtype in DType::ALL {
            for paths in [
                Paths::FALLBACK,
                Paths {
                    shader_f16: true,
                    subgroups: false,
                },
                Paths {
                    shader_f16: false,
                    subgroups: true,
                },
                Paths {
                    shader_f16: true,
                    subgroups: true,
                },
            ] {
                // f16 arithmetic only changes the f16 loader
                if paths.shader_f16 && dtype != DType::F16 {
                    continue;
                }
                let name = format!("{kernel:?}/{dtype}/{}", paths.describe());
                out.push((name, paths, shader_source(kernel, dtype, paths)));
            }
        }
    }
    out
}

pub(crate) fn build_pipeline(device: &wgpu::Device, key: PipelineKey) -> wgpu::ComputePipeline {
    let label = format!("{:?}/{}/{}", key.kernel, key.dtype, key.paths.describe());
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(&label),
        source: wgpu::ShaderSource::Wgsl(shader_source(key.kernel, key.dtype, key.paths).into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&label),
        layout: None,
        module: &module,
        entry_point: Some(key.kernel.entry_point()),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("WG_SIZE", ROW_WORKGROUP as f64)],
            // every workgroup variable is written before it is read
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    })
}

/// A storage binding covering elements `[first, end)` (of `elem` bytes) of `buffer`,
/// starting at the largest offset the device's alignment allows; returns the binding and
/// the index of element `first` inside it.
pub(crate) fn storage_window<'a>(
    arg: &'static str,
    buffer: &'a wgpu::Buffer,
    first: u64,
    end: u64,
    elem: u64,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'a>, u32)> {
    let align = limits.min_storage_buffer_offset_alignment as u64;
    let start = first * elem;
    let bind_start = start - start % align;
    let bind_end = (end * elem)
        .div_ceil(4)
        .saturating_mul(4)
        .min(buffer.size());
    let size = bind_end.saturating_sub(bind_start).max(4);
    if size > limits.max_storage_buffer_binding_size {
        return Err(Error::arg(
            arg,
            format!(
                "the view spans {size} bytes, more than this device binds at once ({} bytes)",
                limits.max_storage_buffer_binding_size
            ),
        ));
    }
    if size / elem > u32::MAX as u64 {
        return Err(Error::arg(
            arg,
            format!("the view spans {size} bytes, more elements than 32-bit indices reach"),
        ));
    }
    let inner = (start - bind_start) / elem;
    Ok((
        wgpu::BufferBinding {
            buffer,
            offset: bind_start,
            size: std::num::NonZeroU64::new(size),
        },
        inner as u32,
    ))
}

/// Splits `rows` workgroups over a 2-D grid within the per-dimension limit.
pub(crate) fn grid(rows: u32, limits: &wgpu::Limits) -> Result<(u32, u32)> {
    let max = limits.max_compute_workgroups_per_dimension;
    let x = rows.min(max);
    let y = rows.div_ceil(x.max(1));
    if y > max {
        return Err(Error::arg(
            "logits",
            format!("{rows} rows exceed this device's dispatch grid ({max} x {max})"),
        ));
    }
    Ok((x, y))
}

/// Narrows an element count or offset to the u32 the shaders index with.
pub(crate) fn to_u32(arg: &'static str, what: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::arg(arg, format!("{what} {v} does not fit in 32 bits")))
}
