//! Finding adapters and opening a device on them: wgpu's environment's choice, one
//! adapter by name, or every adapter found with the ones that refuse set aside.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{describe_info, paths_for, Context, Paths};
use crate::error::{Error, Result};

/// A wgpu instance that honours `WGPU_BACKEND` and wgpu's other environment variables.
pub fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter of every backend `WGPU_BACKEND` allows (all of them by default).
#[cfg(not(target_arch = "wasm32"))]
pub fn adapters() -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
}

/// Set to `1` to make every adapter that refuses a device an error for
/// [`Context::open_all`] (and so for `check`, `bench` and the tests), instead of a
/// reported skip.
pub const STRICT_ENV: &str = "WGPU_POLICY_LOSS_STRICT";

/// For testing the skip: a device request on every adapter whose "name (Backend)"
/// contains this value (case-insensitive) fails as a real refusal would.
pub const FAIL_DEVICE_ENV: &str = "WGPU_POLICY_LOSS_FAIL_DEVICE";

fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The value of [`FAIL_DEVICE_ENV`] when it selects this adapter.
fn refused_by_env(info: &wgpu::AdapterInfo) -> Option<String> {
    let pattern = std::env::var(FAIL_DEVICE_ENV).ok()?;
    (!pattern.is_empty()
        && describe_info(info)
            .to_lowercase()
            .contains(&pattern.to_lowercase()))
    .then_some(pattern)
}

/// An adapter that is listed but did not open a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// "name (Backend)".
    pub adapter: String,
    /// What the driver (or wgpu) said.
    pub reason: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: unavailable, could not open a device: {}",
            self.adapter, self.reason
        )
    }
}

/// Every adapter found: a context for each one that opened a device, and the ones
/// that refused ([`Context::open_all`]).
#[derive(Debug, Default)]
pub struct OpenAdapters {
    /// A context for each adapter that opened a device, in wgpu's enumeration order.
    pub contexts: Vec<Context>,
    /// The adapters that refused one, each with the driver's reason.
    pub unavailable: Vec<Unavailable>,
}

/// What the library would use on an adapter; reported by `info`.
pub fn available_paths(adapter: &wgpu::Adapter) -> Paths {
    paths_for(adapter.features(), &adapter.get_info())
}

impl Context {
    /// Opens a device on the adapter wgpu's environment selects: `WGPU_ADAPTER_NAME`
    /// if set (as [`Context::adapter_named`] takes it: a backend, `lavapipe`, or part
    /// of the adapter's name), else the `WGPU_POWER_PREF` preference (high performance
    /// by default), among the backends `WGPU_BACKEND` allows.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        let adapter = match std::env::var("WGPU_ADAPTER_NAME") {
            Ok(name) => Self::adapter_named(&name)?,
            Err(_) => pollster::block_on(
                instance().request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::from_env()
                        .unwrap_or(wgpu::PowerPreference::HighPerformance),
                    ..Default::default()
                }),
            )
            .map_err(|e| Error::NoAdapter(format!(" ({e})")))?,
        };
        Self::from_adapter(&adapter)
    }

    /// [`Context::new`] without blocking, as the browser needs: the adapter the
    /// platform prefers (WebGPU's `requestAdapter` there), its device opened with
    /// [`Context::from_adapter_async`].
    pub async fn new_async() -> Result<Self> {
        let adapter = instance()
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(format!(" ({e})")))?;
        Self::from_adapter_async(&adapter, adapter.limits()).await
    }

    /// The adapter `name` picks, as `--adapter` and `WGPU_ADAPTER_NAME` take it
    /// (case-insensitive, surrounding spaces ignored):
    /// - a backend: `vulkan`, `gl` (or `gles`, `opengl`), `metal`, `dx12`, `webgpu` (the
    ///   browser's): the adapters of exactly that backend;
    /// - `lavapipe`: Mesa's software Vulkan adapter (named `llvmpipe …` on Vulkan);
    /// - otherwise part of the adapter's "name (Backend)" ([`describe_info`]), e.g.
    ///   `llvmpipe` or `nvidia`.
    ///
    /// Where several adapters match, the first in wgpu's enumeration order ([`adapters`],
    /// the order `info` lists them) is taken. None: [`Error::NoAdapter`] naming the
    /// adapters present.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn adapter_named(name: &str) -> Result<wgpu::Adapter> {
        use wgpu::Backend;
        let want = name.trim().to_lowercase();
        // a backend's name is its own rule: `gl` as a substring would also pick any
        // adapter whose name holds those letters
        let backend = match want.as_str() {
            "vulkan" => Some(Backend::Vulkan),
            "gl" | "gles" | "opengl" => Some(Backend::Gl),
            "metal" => Some(Backend::Metal),
            "dx12" => Some(Backend::Dx12),
            "webgpu" => Some(Backend::BrowserWebGpu),
            _ => None,
        };
        let label = |info: &wgpu::AdapterInfo| describe_info(info).to_lowercase();
        let fits = |info: &wgpu::AdapterInfo| match backend {
            Some(b) => info.backend == b,
            // lavapipe calls itself llvmpipe, as Mesa's GL rasteriser does
            None if want == "lavapipe" => {
                info.backend == Backend::Vulkan
                    && ["llvmpipe", "lavapipe"]
                        .iter()
                        .any(|n| label(info).contains(n))
            }
            None => label(info).contains(&want),
        };
        let all = adapters();
        let names: Vec<String> = all.iter().map(|a| describe_info(&a.get_info())).collect();
        all.into_iter()
            .find(|a| fits(&a.get_info()))
            .ok_or_else(|| {
                let rule = match backend {
                    Some(b) => format!("the {b:?} backend; "),
                    None if want == "lavapipe" => "Mesa's Vulkan llvmpipe; ".to_string(),
                    None => String::new(),
                };
                Error::NoAdapter(format!(
                    " matching `{name}` ({rule}adapters present: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })
    }

    /// A context for every adapter found. An adapter that refuses a device gives an `Err`
    /// in its place rather than being skipped; [`Context::open_all`] sorts them out.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn all() -> Vec<Result<Self>> {
        adapters().iter().map(Self::from_adapter).collect()
    }

    /// Opens a device on every adapter found. An adapter that is listed but refuses a
    /// device (a GL adapter of a headless NVIDIA driver answers "Parent device is lost")
    /// is set aside in [`OpenAdapters::unavailable`], named, with the reason, so that the
    /// others still run. `Err` when no adapter opens, or, in strict mode
    /// (`WGPU_POLICY_LOSS_STRICT=1`), when any adapter refuses.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_all() -> Result<OpenAdapters> {
        let mut open = OpenAdapters::default();
        for adapter in adapters() {
            match Self::from_adapter(&adapter) {
                Ok(ctx) => open.contexts.push(ctx),
                Err(e) => open.unavailable.push(Unavailable {
                    adapter: describe_info(&adapter.get_info()),
                    reason: match e {
                        Error::RequestDevice { reason, .. } => reason,
                        other => other.to_string(),
                    },
                }),
            }
        }
        if let (true, Some(u)) = (strict(), open.unavailable.first()) {
            return Err(Error::RequestDevice {
                adapter: u.adapter.clone(),
                reason: format!(
                    "{} ({STRICT_ENV} is set: every adapter must open)",
                    u.reason
                ),
            });
        }
        if open.contexts.is_empty() {
            let why = open
                .unavailable
                .iter()
                .map(|u| format!("`{}` refused a device: {}", u.adapter, u.reason))
                .collect::<Vec<_>>();
            return Err(Error::NoAdapter(if why.is_empty() {
                String::new()
            } else {
                format!(" that opens a device ({})", why.join("; "))
            }));
        }
        Ok(open)
    }

    /// Opens a device on `adapter` with the features this library can use (f16,
    /// subgroups) and the adapter's full limits (large storage bindings).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        Self::from_adapter_with_limits(adapter, adapter.limits())
    }

    /// As [`Context::from_adapter`], with explicit limits (e.g. lowered ones, to exercise
    /// chunking on a small device).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_adapter_with_limits(adapter: &wgpu::Adapter, limits: wgpu::Limits) -> Result<Self> {
        pollster::block_on(Self::from_adapter_async(adapter, limits))
    }

    /// [`Context::from_adapter_with_limits`] without blocking (the browser's form).
    pub async fn from_adapter_async(adapter: &wgpu::Adapter, limits: wgpu::Limits) -> Result<Self> {
        let info = adapter.get_info();
        if let Some(pattern) = refused_by_env(&info) {
            return Err(Error::RequestDevice {
                adapter: info.name.clone(),
                reason: format!(
                    "refused on purpose: {FAIL_DEVICE_ENV}={pattern} matches `{}` (a \
                     simulated refusal, for testing)",
                    describe_info(&info)
                ),
            });
        }
        // f16 and subgroups for the kernels; timestamps for the benchmarks' GPU times
        let wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-policy-loss"),
                required_features: adapter.features() & wanted,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        // Errors inside our calls are caught by error scopes and returned as `Err`;
        // anything else (the caller's own misuse of this device) is reported, not a panic.
        let mut ctx = Self::from_wgpu(device, queue);
        let stats = ctx.stats.clone();
        ctx.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                if cfg!(target_arch = "wasm32") {
                    let mut first = stats.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert_with(|| e.to_string());
                } else {
                    eprintln!("wgpu-policy-loss: uncaptured wgpu error: {e}");
                }
            }));
        ctx.adapter = Some(adapter.clone());
        // A lost device turns every later call into an `Err` (only on devices we opened:
        // a caller's device keeps the caller's own callback).
        let stats = ctx.stats.clone();
        ctx.device.set_device_lost_callback(move |reason, message| {
            *stats.lost.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{reason:?}: {message}"));
            stats.lost_flag.store(true, Ordering::SeqCst);
        });
        Ok(ctx)
    }
}
