//! The wgpu buffers behind Burn's tensors, and the copies in and out of them.
//!
//! CubeCL suballocates tensors from larger pages, so a tensor is a buffer and a byte
//! offset (aligned to `min_storage_buffer_offset_alignment`). The guard keeps the
//! allocation from being handed to another tensor while it is held.

use burn::backend::wgpu::{into_contiguous, AutoCompiler, CubeTensor, WgpuResource};
use burn::tensor::{DType as BurnDType, Shape};
use cubecl::wgpu::WgpuServer;
use cubecl_runtime::storage::ManagedResource;
use wgpu_policy_loss::{wgpu, Context, DType, F32View};

use wgpu_policy_loss::Error;

use crate::pool::Pool;

/// A Burn tensor and its storage.
pub(crate) struct Borrowed {
    pub tensor: CubeTensor,
    guard: ManagedResource<WgpuResource>,
}

impl Borrowed {
    pub fn new(arg: &'static str, tensor: CubeTensor) -> Result<Self, Error> {
        let guard = tensor
            .client
            .get_resource::<WgpuServer<AutoCompiler>>(tensor.handle.clone())
            .map_err(|e| {
                Error::Wgpu(format!("`{arg}`: no wgpu buffer behind the tensor: {e:?}"))
            })?;
        Ok(Borrowed { tensor, guard })
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.guard.resource().buffer
    }

    /// Where the tensor starts in its buffer, in bytes.
    pub fn offset(&self) -> u64 {
        self.guard.resource().offset
    }

    /// The tensor's bytes, rounded up to the 4 wgpu copies move at a time (allocations
    /// are aligned far coarser, so the rounding stays inside this one's slot).
    pub fn copy_bytes(&self) -> u64 {
        let n = self.tensor.meta.shape().num_elements() * self.tensor.dtype.size();
        (n as u64).div_ceil(4) * 4
    }

    pub fn strides(&self) -> Vec<usize> {
        self.tensor.meta.strides().to_vec()
    }
}

/// `t` with contiguous columns (rows may be strided, as the kernels take them): a copy
/// only where they are not, or where CubeCL tiled the storage.
pub(crate) fn columns_contiguous(t: CubeTensor) -> CubeTensor {
    let dims = t.meta.shape().num_dims();
    if t.meta.is_tiled() || t.meta.strides()[dims - 1] != 1 {
        into_contiguous(t)
    } else {
        t
    }
}

/// The library's dtype of a Burn float dtype.
pub(crate) fn dtype(d: BurnDType) -> Option<DType> {
    match d {
        BurnDType::F32 => Some(DType::F32),
        BurnDType::F16 => Some(DType::F16),
        BurnDType::BF16 => Some(DType::Bf16),
        _ => None,
    }
}

/// A fresh Burn tensor (uninitialised) of `shape` and `dtype`, like `like`'s device.
pub(crate) fn empty(like: &CubeTensor, shape: Shape, dtype: BurnDType) -> CubeTensor {
    let bytes = (shape.num_elements() * dtype.size()).max(4);
    let handle = like.client.empty(bytes);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        dtype,
    )
}

/// The small per-row tensors, copied into one buffer of the library's own: the
/// kernels bind them beside the gradient they write, and wgpu forbids a buffer bound
/// both read-only and writable in one dispatch, which a shared CubeCL page would be.
/// O(rows) bytes; the `[B, S, V]` logits and gradient are not copied.
pub(crate) struct Staged {
    pub buffer: wgpu::Buffer,
    offsets: Vec<u64>,
    /// Each input's bytes (its elements' bytes, rounded up to 4).
    bytes: Vec<u64>,
}

impl Staged {
    pub fn new(
        ctx: &Context,
        pool: &Pool,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &[&Borrowed],
    ) -> Self {
        let mut offsets = Vec::with_capacity(inputs.len());
        let bytes: Vec<u64> = inputs.iter().map(|b| b.copy_bytes()).collect();
        let mut end = 0;
        for n in &bytes {
            offsets.push(end);
            end += n;
        }
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let buffer = pool.buffer(ctx, "burn per-row inputs", end, usage);
        for (b, &at) in inputs.iter().zip(&offsets) {
            encoder.copy_buffer_to_buffer(b.buffer(), b.offset(), &buffer, at, b.copy_bytes());
        }
        Staged {
            buffer,
            offsets,
            bytes,
        }
    }

    /// The `i`-th input's 32-bit elements.
    pub fn len(&self, i: usize) -> u32 {
        (self.bytes[i] / 4) as u32
    }

    /// The kept sets staged as inputs `i` (offsets) and `i + 1` (ids).
    pub fn kept(&self, i: usize) -> wgpu_policy_loss::KeptView<'_> {
        wgpu_policy_loss::KeptView::new(&self.buffer, &self.buffer, self.len(i + 1))
            .with_byte_offsets(self.offsets[i], self.offsets[i + 1])
    }

    /// The `i`-th input's copy.
    pub fn view(&self, i: usize) -> F32View<'_> {
        F32View::at(&self.buffer, self.offsets[i])
    }

    pub fn offset(&self, i: usize) -> u64 {
        self.offsets[i]
    }
}

/// Copies `bytes` of `src` (from `at`) into a Burn tensor.
pub(crate) fn copy_out(
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    at: u64,
    dst: &Borrowed,
) {
    enc.copy_buffer_to_buffer(src, at, dst.buffer(), dst.offset(), dst.copy_bytes());
}
