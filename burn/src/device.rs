//! Which Burn devices the loss can run on: a registry from Burn's wgpu devices to the
//! library's [`Context`] on the same `wgpu::Device` and `Queue`.
//!
//! CubeCL does not hand out the `wgpu::Device` behind a running runtime, so the
//! device and queue are taken where they are made: [`init`] brings up Burn's wgpu
//! runtime and keeps its handles; [`register`] takes the handles of a runtime the
//! caller brought up with `init_with_setup`; [`from_adapter`] opens a device of the
//! library's on an adapter and registers it with Burn.

use std::sync::{Arc, Mutex, PoisonError};

use burn::backend::wgpu::{WgpuDevice, WgpuSetup};
use burn::backend::{CubeDevice, DispatchDevice};
use burn::tensor::Device;
use wgpu_policy_loss::{wgpu, Context};

use crate::error::{Error, Result};
use crate::pool::Pool;

/// A registered device: the library's context on it, and the first error a lazy
/// (Fusion) execution met, for the next checked call to return.
struct Entry {
    device: WgpuDevice,
    ctx: Context,
    pool: Arc<Pool>,
    error: Option<wgpu_policy_loss::Error>,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn with_registry<T>(f: impl FnOnce(&mut Vec<Entry>) -> T) -> T {
    f(&mut REGISTRY.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Burn's default wgpu device, registered for the loss: what most callers want.
/// `.autodiff()` it for training.
pub fn init() -> Result<Device> {
    init_with(Device::wgpu_options())
}

/// [`init`] with Burn's options (adapter kind, graphics API, memory, tasks).
pub fn init_with(options: burn::tensor::wgpu::WgpuOptions) -> Result<Device> {
    let (device, setup) = options
        .init_with_setup()
        .map_err(|e| Error::Burn(format!("Burn's wgpu runtime did not start: {e}")))?;
    register(&device, &setup)?;
    Ok(device)
}

/// Registers a Burn wgpu device with the handles it runs on (the pair
/// `Device::wgpu_options()...init_with_setup()` returns).
pub fn register(device: &Device, setup: &WgpuSetup) -> Result<()> {
    let wgpu_device = wgpu_device_of(device).ok_or_else(|| not_wgpu("device", device))?;
    let ctx = Context::from_wgpu(setup.device.clone(), setup.queue.clone());
    with_registry(|r| {
        r.retain(|e| e.device != wgpu_device);
        r.push(Entry {
            device: wgpu_device,
            ctx,
            pool: Arc::default(),
            error: None,
        });
    });
    Ok(())
}

/// Opens a device on `adapter` with what Burn's runtime asks of one (every feature the
/// adapter has but mapped primary buffers and the experimental ones, its full limits)
/// and registers it with both Burn and the loss: a Burn device on any adapter
/// `wgpu_policy_loss::adapters()` lists.
pub fn from_adapter(instance: &wgpu::Instance, adapter: &wgpu::Adapter) -> Result<Device> {
    let info = adapter.get_info();
    let features = adapter
        .features()
        .iter_names()
        .filter(|(name, _)| {
            !name.starts_with("EXPERIMENTAL") && *name != "MAPPABLE_PRIMARY_BUFFERS"
        })
        .fold(wgpu::Features::empty(), |all, (_, f)| all | f);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("wgpu-policy-loss-burn"),
        required_features: features,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| wgpu_policy_loss::Error::RequestDevice {
        adapter: info.name.clone(),
        reason: e.to_string(),
    })?;
    let setup = WgpuSetup {
        instance: instance.clone(),
        adapter: adapter.clone(),
        device,
        queue,
        backend: info.backend,
    };
    let device = Device::wgpu_options()
        .setup(setup.clone())
        .init()
        .map_err(|e| Error::Burn(format!("Burn refused the device on `{}`: {e}", info.name)))?;
    register(&device, &setup)?;
    Ok(device)
}

/// The library's context on a registered device, and what its calls reuse.
pub(crate) fn context(device: &CubeDevice) -> Option<(Context, Arc<Pool>)> {
    let CubeDevice::Wgpu(d) = device else {
        return None;
    };
    with_registry(|r| {
        let e = r.iter().find(|e| e.device == *d)?;
        Some((e.ctx.clone(), e.pool.clone()))
    })
}

/// The context of the device `arg` lives on, or an error naming `arg`.
pub(crate) fn context_of(arg: &'static str, device: &Device) -> Result<(Context, Arc<Pool>)> {
    let d = wgpu_device_of(device).ok_or_else(|| not_wgpu(arg, device))?;
    context(&CubeDevice::Wgpu(d)).ok_or_else(|| {
        Error::arg(
            arg,
            format!(
                "is on {device:?}, which is not registered for the loss: bring the device up \
                 with wgpu_policy_loss_burn::init() (or register it)"
            ),
        )
    })
}

thread_local! {
    /// The first error of a call that ran on this thread (every call does without
    /// Fusion, and with it where the stream executes on the reading thread).
    static ERROR: std::cell::RefCell<Option<wgpu_policy_loss::Error>> = const { std::cell::RefCell::new(None) };
}

/// Keeps the first error an execution met for the thread's next checked call; with
/// Fusion, whose stream may execute on another thread, for the next on `device` too.
pub(crate) fn record_error(device: &CubeDevice, error: wgpu_policy_loss::Error) {
    let kept = ERROR.with(|e| {
        let mut e = e.borrow_mut();
        if e.is_some() {
            return true;
        }
        *e = cfg!(feature = "fusion")
            .then(|| copy(&error))
            .or(Some(error));
        false
    });
    let CubeDevice::Wgpu(d) = device else {
        return;
    };
    if cfg!(feature = "fusion") && !kept {
        let error = ERROR.with(|e| e.borrow().as_ref().map(copy));
        with_registry(|r| {
            if let (Some(e), Some(error)) = (r.iter_mut().find(|e| e.device == *d), error) {
                e.error.get_or_insert(error);
            }
        });
    }
}

/// The library's error is not `Clone`; its message and argument are what a caller sees.
fn copy(e: &wgpu_policy_loss::Error) -> wgpu_policy_loss::Error {
    match e {
        wgpu_policy_loss::Error::InvalidArgument { arg, reason } => {
            wgpu_policy_loss::Error::InvalidArgument {
                arg,
                reason: reason.clone(),
            }
        }
        other => wgpu_policy_loss::Error::Wgpu(other.to_string()),
    }
}

/// Takes the error [`record_error`] kept for this thread, or else (Fusion) for
/// `device`.
pub(crate) fn take_error(device: &Device) -> Option<wgpu_policy_loss::Error> {
    if let Some(e) = ERROR.with(|e| e.borrow_mut().take()) {
        if cfg!(feature = "fusion") {
            let d = wgpu_device_of(device)?;
            with_registry(|r| r.iter_mut().find(|e| e.device == d).map(|e| e.error.take()));
        }
        return Some(e);
    }
    if !cfg!(feature = "fusion") {
        return None;
    }
    let d = wgpu_device_of(device)?;
    with_registry(|r| r.iter_mut().find(|e| e.device == d)?.error.take())
}

fn wgpu_device_of(device: &Device) -> Option<WgpuDevice> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(CubeDevice::Wgpu(d)) => Some(d.clone()),
        _ => None,
    }
}

fn not_wgpu(arg: &'static str, device: &Device) -> Error {
    Error::arg(
        arg,
        format!("is on {device:?}: the loss runs on Burn's wgpu backend only"),
    )
}
