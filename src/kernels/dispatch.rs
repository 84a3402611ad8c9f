//! Bindings and dispatches: storage windows at the offsets a device allows, uniform
//! blocks, and the compute passes that run a pipeline once or once per chunk of rows.

use super::{Kernel, PipelineKey};
use crate::error::{Error, Result};

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
    storage_window_in(arg, buffer, first, end, elem, 4, limits)
}

/// [`storage_window`] whose end is rounded up to a multiple of `quantum` bytes (what
/// one element of the shader's array holds: 4 bytes, or 16 for four f32 and 8 for four
/// 16-bit values on the four-at-a-time path).
pub(crate) fn storage_window_in<'a>(
    arg: &'static str,
    buffer: &'a wgpu::Buffer,
    first: u64,
    end: u64,
    elem: u64,
    quantum: u64,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'a>, u32)> {
    let align = limits.min_storage_buffer_offset_alignment as u64;
    let start = first * elem;
    let bind_start = start - start % align;
    // bindings cover whole words (16-bit data ending mid-word needs the padding)
    let bind_end = (end * elem)
        .div_ceil(quantum)
        .saturating_mul(quantum)
        .max(bind_start + quantum);
    if bind_end > buffer.size() {
        return Err(Error::arg(
            arg,
            format!(
                "the view ends at byte {} but a binding must reach byte {bind_end} (whole \
                 4-byte words) and the buffer holds {} bytes; pad the buffer to a multiple of 4",
                end * elem,
                buffer.size()
            ),
        ));
    }
    let size = bind_end - bind_start;
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

/// [`storage_window`] over `len` f32 values of a view.
pub(crate) fn f32_window<'a>(
    arg: &'static str,
    view: &crate::view::F32View<'a>,
    len: u64,
    limits: &wgpu::Limits,
) -> Result<(wgpu::BufferBinding<'a>, u32)> {
    let first = view.offset / 4;
    storage_window(arg, view.buffer, first, first + len, 4, limits)
}

/// A whole small buffer (scratch, uniforms) as a binding resource.
pub(crate) fn whole(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

pub(crate) fn entry(binding: u32, buffer: wgpu::BufferBinding<'_>) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(buffer),
    }
}

/// Records one compute pass: `pipeline` with one bind group, over `groups` workgroups.
pub(crate) fn dispatch(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    entries: &[wgpu::BindGroupEntry<'_>],
    groups: (u32, u32),
) -> Result<()> {
    dispatch_chunks(ctx, encoder, label, pipeline, &[(entries.to_vec(), groups)])
}

/// Records a one-workgroup kernel on O(rows) data (prepare, seq_terms, select,
/// reduce, advantages): its parameter block at binding 0, then `bindings`.
pub(crate) fn dispatch_single<P: bytemuck::Pod>(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    kernel: Kernel,
    params: &P,
    bindings: Vec<wgpu::BindGroupEntry<'_>>,
) -> Result<()> {
    let pipeline = ctx.pipeline(PipelineKey::small(kernel, ctx.paths()))?;
    let label = kernel.entry_point();
    let uniform = uniform(ctx, &format!("{label} params"), params);
    let mut entries = vec![whole(0, &uniform)];
    entries.extend(bindings);
    dispatch(ctx, encoder, label, &pipeline, &entries, (1, 1))
}

/// A uniform buffer holding `params`.
pub(crate) fn uniform<T: bytemuck::Pod>(
    ctx: &crate::Context,
    label: &str,
    params: &T,
) -> wgpu::Buffer {
    ctx.buffer_init(
        label,
        bytemuck::bytes_of(params),
        wgpu::BufferUsages::UNIFORM,
    )
}

/// One uniform buffer holding a parameter block per chunk, each at an offset the
/// device accepts for a uniform binding.
pub(crate) struct ChunkUniforms {
    buffer: wgpu::Buffer,
    stride: u64,
    size: u64,
}

impl ChunkUniforms {
    pub(crate) fn new<T: bytemuck::Pod>(ctx: &crate::Context, label: &str, blocks: &[T]) -> Self {
        let align = ctx.device().limits().min_uniform_buffer_offset_alignment as u64;
        let size = std::mem::size_of::<T>() as u64;
        let stride = size.div_ceil(align) * align;
        let mut bytes = vec![0u8; (stride * blocks.len() as u64) as usize];
        for (i, b) in blocks.iter().enumerate() {
            let at = i * stride as usize;
            bytes[at..at + size as usize].copy_from_slice(bytemuck::bytes_of(b));
        }
        let buffer = ctx.buffer_init(label, &bytes, wgpu::BufferUsages::UNIFORM);
        ChunkUniforms {
            buffer,
            stride,
            size,
        }
    }

    pub(crate) fn entry(&self, binding: u32, chunk: usize) -> wgpu::BindGroupEntry<'_> {
        entry(
            binding,
            wgpu::BufferBinding {
                buffer: &self.buffer,
                offset: chunk as u64 * self.stride,
                size: std::num::NonZeroU64::new(self.size),
            },
        )
    }
}

/// Records one compute pass that runs `pipeline` once per chunk, each with its own
/// bind group and grid.
pub(crate) fn dispatch_chunks(
    ctx: &crate::Context,
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    chunks: &[(Vec<wgpu::BindGroupEntry<'_>>, (u32, u32))],
) -> Result<()> {
    ctx.scoped(|| {
        let layout = pipeline.get_bind_group_layout(0);
        let groups: Vec<wgpu::BindGroup> = chunks
            .iter()
            .map(|(entries, _)| {
                ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(label),
                    layout: &layout,
                    entries,
                })
            })
            .collect();
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        for (group, (_, (x, y))) in groups.iter().zip(chunks) {
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(*x, *y, 1);
        }
    })
}

/// Lays `rows` workgroups (at most the square of the per-dimension limit, which
/// `plan_chunks` guarantees) over a 2-D grid.
pub(crate) fn grid(rows: u32, limits: &wgpu::Limits) -> (u32, u32) {
    let x = rows.min(limits.max_compute_workgroups_per_dimension).max(1);
    (x, rows.div_ceil(x))
}
