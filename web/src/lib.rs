//! wgpu-policy-loss on the visitor's GPU, through WebGPU: what the demo page
//! (`web/index.html`) calls. The same WGSL and the same host code as natively; only the
//! waiting is the browser's (every read-back is awaited, never blocked on).

use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use wgpu_policy_loss::tools::check::{self, Worst};
use wgpu_policy_loss::tools::demo::{Demo, DemoConfig};
use wgpu_policy_loss::{Context, DType};

fn js_error(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// The browser's WebGPU adapter, with a device open on it.
#[wasm_bindgen]
pub struct Gpu {
    ctx: Rc<Context>,
}

#[wasm_bindgen]
impl Gpu {
    /// Opens the adapter the browser offers (`navigator.gpu.requestAdapter()`).
    pub async fn open() -> Result<Gpu, JsValue> {
        let ctx = Context::new_async().await.map_err(js_error)?;
        Ok(Gpu { ctx: Rc::new(ctx) })
    }

    /// "name (Backend) [paths]": what the page shows.
    pub fn describe(&self) -> String {
        // browsers keep the adapter's name to themselves
        let name = match self.ctx.adapter_info().name.as_str() {
            "" => "the browser's WebGPU adapter".to_string(),
            _ => self.ctx.describe(),
        };
        format!("{name} [{}]", self.ctx.paths().describe())
    }

    /// The GRPO demo of the CLI (`Demo`, its default settings but `group_size`
    /// answers per prompt), `steps` steps, calling `on_step(step, mean_reward)` after
    /// each; resolves to the last mean reward.
    pub fn demo(&self, steps: u32, group_size: u32, on_step: js_sys::Function) -> js_sys::Promise {
        let ctx = self.ctx.clone();
        future_to_promise(async move {
            let config = DemoConfig {
                group_size,
                ..DemoConfig::default()
            };
            let mut demo = Demo::new(&ctx, &config).map_err(js_error)?;
            let mut last = 0.0;
            for step in 0..steps {
                last = demo.step_async().await.map_err(js_error)?;
                on_step.call2(&JsValue::NULL, &step.into(), &last.into())?;
            }
            Ok(last.into())
        })
    }

    /// The CLI's `check` on this adapter: every dtype and loss mode, three shapes (up to
    /// V = 151936), against the f64 reference. Calls `on_row(dtype, cases, loss error,
    /// log-prob error, gradient error, failed)` per dtype; resolves to true when every
    /// case is within tolerance.
    pub fn check(&self, on_row: js_sys::Function) -> js_sys::Promise {
        let ctx = self.ctx.clone();
        future_to_promise(async move {
            let mut passed = true;
            for dtype in DType::ALL {
                let mut worst = Worst::default();
                for case in check::cases(dtype) {
                    if let Err(e) = check::run_case_async(&ctx, &case, &mut worst).await {
                        return Err(js_error(format!("{case:?}: {e}")));
                    }
                }
                passed &= worst.failed == 0;
                let row = js_sys::Array::new();
                row.push(&dtype.name().into());
                row.push(&(worst.cases as u32).into());
                row.push(&worst.loss.into());
                row.push(&worst.logp.into());
                row.push(&worst.grad.into());
                row.push(&(worst.failed as u32).into());
                on_row.apply(&JsValue::NULL, &row)?;
            }
            Ok(passed.into())
        })
    }
}

/// The check's tolerances, for the page's table header.
#[wasm_bindgen]
pub fn tolerances() -> String {
    check::tolerances()
}
