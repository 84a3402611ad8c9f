//! The device we run on (ours or the caller's), what it can do, and the pipelines
//! built for it. Pipelines are compiled once per device and shared by every clone of
//! the context.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
pub use crate::shader::Paths;
use crate::shader::PipelineKey;
pub(crate) use crate::shader::{CPU_ROW_WORKGROUP, ROW_WORKGROUP};

pub(crate) mod open;

/// A device and queue with the pipelines built for them: where every call starts.
///
/// Open one on the adapter wgpu's environment picks ([`Context::new`]), on an adapter of
/// your choosing ([`Context::from_adapter`]), or wrap the device and queue a trainer
/// already has ([`Context::from_wgpu`]). Its methods take host slices and read the
/// results back ([`Context::policy_loss`], [`Context::logprobs`],
/// [`Context::row_stats`], [`Context::advantages`], …; each with an `_async` form for
/// the browser); [`PolicyLoss`](crate::PolicyLoss) and [`LogProbs`](crate::LogProbs)
/// record into the caller's encoder instead. Clones share the device, the pipeline cache
/// (each pipeline is built on first use) and the allocation counts.
#[derive(Clone)]
pub struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// The adapter the device was opened on, when we opened it.
    adapter: Option<wgpu::Adapter>,
    available: Paths,
    paths: Paths,
    lane_blocks: bool,
    pipelines: Arc<Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>>,
    stats: Arc<Stats>,
}

/// What the library has done to a device, shared by every clone of a context.
#[derive(Default)]
struct Stats {
    buffers: AtomicU64,
    bytes: AtomicU64,
    lost: Mutex<Option<String>>,
    lost_flag: AtomicBool,
    /// In the browser, where error scopes cannot be waited for inside a synchronous
    /// call: the first wgpu error reported since the last read-back.
    uncaptured: Mutex<Option<String>>,
}

/// Buffers the library has created on a device (uploads of the host convenience layer
/// included), for checking that a call's memory is what [`crate::PolicyLoss::scratch_bytes`] says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    /// How many buffers, since the device was opened or wrapped (none is subtracted
    /// when a buffer is dropped).
    pub buffers: u64,
    /// Their sizes in bytes, summed the same way.
    pub bytes: u64,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .field("paths", &self.paths)
            .finish()
    }
}

/// "name (Backend)": how adapters are named in messages, tables and `--adapter`.
pub fn describe_info(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?})", info.name, info.backend)
}

fn paths_for(features: wgpu::Features, info: &wgpu::AdapterInfo) -> Paths {
    Paths {
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        // The reduction tree needs whole subgroups inside one workgroup (of either lane
        // layout).
        subgroups: features.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_max_size <= CPU_ROW_WORKGROUP
            && info.subgroup_min_size >= 1,
    }
}

impl Context {
    /// Wraps a caller's device and queue (a trainer's, or Burn's). The paths used follow
    /// the features the device was opened with.
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let available = paths_for(device.features(), &info);
        let lane_blocks = info.device_type == wgpu::DeviceType::Cpu;
        Context {
            device,
            queue,
            info,
            adapter: None,
            available,
            paths: available,
            lane_blocks,
            pipelines: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The same device restricted to `paths` (intersected with what it has); pipelines
    /// stay shared. `with_paths(Paths::FALLBACK)` forces the portable kernels.
    pub fn with_paths(&self, paths: Paths) -> Self {
        let mut ctx = self.clone();
        ctx.paths = Paths {
            shader_f16: paths.shader_f16 && self.available.shader_f16,
            subgroups: paths.subgroups && self.available.subgroups,
        };
        ctx
    }

    /// The wgpu device: where the caller creates the buffers the views read and the
    /// command encoders the `record` methods record into.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The device's queue, to submit the recorded encoders (or use
    /// [`Context::submit_and_wait`]).
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The adapter's name, backend, driver and device type.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The adapter this context opened its device on (`None` for a caller's device
    /// wrapped by [`Context::from_wgpu`]): e.g. to open another device on it with other
    /// limits.
    pub fn adapter(&self) -> Option<&wgpu::Adapter> {
        self.adapter.as_ref()
    }

    /// How many loop iterations, in all, one invocation of a shader may run on this
    /// adapter before the driver cuts its loops short, when there is such a cap: Mesa's
    /// llvmpipe and lavapipe (gallivm's loop limiter, 65,535, shared by every loop of a
    /// shader) stop looping and go on with whatever the loops had so far. Kernels whose
    /// lanes would loop longer are an error there rather than a wrong number.
    pub fn loop_limit(&self) -> Option<u64> {
        let mesa_cpu = [&self.info.name, &self.info.driver]
            .iter()
            .any(|s| s.to_lowercase().contains("llvmpipe"));
        mesa_cpu.then_some(65_535)
    }

    /// Whether the row kernels give each lane a contiguous block of a row rather than a
    /// stride: what a CPU rasteriser (lavapipe, llvmpipe) wants; GPUs want the stride.
    pub fn lane_blocks(&self) -> bool {
        self.lane_blocks
    }

    /// The same device with the other lane layout of the row kernels (pipelines stay
    /// shared): results within the same tolerances, bits that may differ in the last
    /// place. Tests use it to run a GPU's layout on a CPU adapter and back.
    pub fn with_lane_blocks(&self, on: bool) -> Self {
        let mut ctx = self.clone();
        ctx.lane_blocks = on;
        ctx
    }

    /// The paths this context's kernels use.
    pub fn paths(&self) -> Paths {
        self.paths
    }

    /// The paths the device could use.
    pub fn available_paths(&self) -> Paths {
        self.available
    }

    /// "name (backend)", for messages and tables.
    pub fn describe(&self) -> String {
        describe_info(&self.info)
    }

    /// Buffers the library has created on this device so far.
    pub fn allocations(&self) -> Allocations {
        Allocations {
            buffers: self.stats.buffers.load(Ordering::SeqCst),
            bytes: self.stats.bytes.load(Ordering::SeqCst),
        }
    }

    fn count(&self, bytes: u64) {
        self.stats.buffers.fetch_add(1, Ordering::SeqCst);
        self.stats.bytes.fetch_add(bytes, Ordering::SeqCst);
    }

    /// A new buffer, counted in [`Context::allocations`] (every buffer the library
    /// creates goes through here or `buffer_init`).
    pub fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.count(size);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        })
    }

    /// `Err` naming `arg` where `what` needs a buffer of `bytes`, more than the
    /// largest this device makes (`max_buffer_size`): checked before allocating, so
    /// that no call ends in wgpu's validation error.
    pub(crate) fn fits_buffer(&self, arg: &'static str, what: &str, bytes: u64) -> Result<()> {
        let largest = self.device.limits().max_buffer_size;
        if bytes > largest {
            return Err(Error::arg(
                arg,
                format!(
                    "{what} needs a buffer of {bytes} bytes, more than this device's largest ({largest} bytes)"
                ),
            ));
        }
        Ok(())
    }

    /// A buffer holding `contents` (padded to 4 bytes). Written through the queue
    /// rather than mapped at creation, which would panic on a lost device.
    pub(crate) fn buffer_init(
        &self,
        label: &str,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        let size = (contents.len() as u64).div_ceil(4).max(1) * 4;
        let buffer = self.buffer(label, size, usage | wgpu::BufferUsages::COPY_DST);
        // whole words straight from `contents` (no copy of a large upload), then the
        // last partial word padded with zeros
        let whole = contents.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(&buffer, 0, &contents[..whole]);
        }
        if whole < contents.len() {
            let mut tail = [0u8; 4];
            tail[..contents.len() - whole].copy_from_slice(&contents[whole..]);
            self.queue.write_buffer(&buffer, whole as u64, &tail);
        }
        buffer
    }

    /// `Err` once the device is lost.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.stats.lost_flag.load(Ordering::SeqCst) {
            let why = self
                .stats
                .lost
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(Error::Wgpu(format!(
                "the device was lost ({})",
                why.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// How many pipelines this device has built so far (shared by every clone).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.lock().map_or(0, |c| c.len())
    }

    /// The cached pipeline for `key`, built on first use.
    pub(crate) fn pipeline(&self, key: PipelineKey) -> Result<wgpu::ComputePipeline> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let pipeline = self.scoped(|| crate::shader::build_pipeline(&self.device, key))?;
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns what they
    /// catch into `Err` (wgpu would otherwise hand it to the uncaptured-error handler).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(Error::Wgpu(e.to_string())),
            None => Ok(out),
        }
    }

    /// In the browser an error scope can only be awaited, and a synchronous call cannot
    /// wait: `f` runs unscoped, and what wgpu reports comes back from the next
    /// read-back ([`Context::read_back_async`]) as `Err`.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        Ok(f())
    }

    /// The first wgpu error reported outside a scope since the last call, as `Err`.
    pub(crate) fn take_uncaptured(&self) -> Result<()> {
        let first = self
            .stats
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match first {
            Some(e) => Err(Error::Wgpu(e)),
            None => Ok(()),
        }
    }

    /// Submits `encoder` and waits for the device to finish it; errors (validation,
    /// a lost device) come back as `Err`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn submit_and_wait(&self, encoder: wgpu::CommandEncoder) -> Result<()> {
        let index = self.scoped(|| self.queue.submit([encoder.finish()]))?;
        let waited = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        });
        // a lost device explains a failed wait better than the wait's own error
        self.check_alive()?;
        waited.map_err(|e| Error::Wgpu(e.to_string()))?;
        Ok(())
    }
}
