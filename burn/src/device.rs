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

use crate::backend::CallId;
use crate::error::{Error, Result};
use crate::pool::Pool;

/// A registered device: the library's context on it, and what its calls reuse.
struct Entry {
    device: WgpuDevice,
    ctx: Context,
    pool: Arc<Pool>,
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

/// Errors an execution met, by the call they belong to, until that call takes its own.
/// A call that failed before its read-back never takes it; the oldest go first.
static ERRORS: Mutex<Vec<(CallId, wgpu_policy_loss::Error)>> = Mutex::new(Vec::new());

/// Errors kept at most: far more calls than can be in flight between a call and its
/// read-back.
const KEPT_ERRORS: usize = 256;

/// Keeps the error an execution of `call` met, for the call's own read-back.
pub(crate) fn record_error(call: CallId, error: wgpu_policy_loss::Error) {
    if call == CallId::default() {
        return;
    }
    let mut errors = ERRORS.lock().unwrap_or_else(PoisonError::into_inner);
    if errors.iter().any(|(c, _)| *c == call) {
        return;
    }
    if errors.len() == KEPT_ERRORS {
        errors.remove(0);
    }
    errors.push((call, error));
}

/// Takes the error [`record_error`] kept for `call`, once the call's results are read
/// (which runs the op where Fusion holds it back).
pub(crate) fn take_error(call: CallId) -> Option<wgpu_policy_loss::Error> {
    let mut errors = ERRORS.lock().unwrap_or_else(PoisonError::into_inner);
    let at = errors.iter().position(|(c, _)| *c == call)?;
    Some(errors.remove(at).1)
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
