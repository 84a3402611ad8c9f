//! A Qwen2 policy in Burn, for GRPO through `wgpu-policy-loss-burn`'s fused head.
//!
//! Run: `cargo run --release -p burn-qwen-grpo [-- CHECKPOINT_DIR]`. With a Hugging
//! Face Qwen2 checkpoint directory (`config.json`, `model.safetensors`), loads it on
//! Burn's wgpu device and runs one forward; without, builds Qwen2.5-0.5B's shape
//! (its parameters are made only when used, so nothing is allocated). Either way it
//! prints the parameter count.

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use burn_qwen_grpo::{load, Qwen2, Qwen2Config};

fn main() -> ExitCode {
    // the errors' own messages (they name the file or tensor), not their Debug form
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let device = wgpu_policy_loss_burn::init()?;
    println!("device: {device:?}");
    let Some(dir) = std::env::args().nth(1) else {
        let config = Qwen2Config::qwen2_5_0_5b();
        let model = Qwen2::new(&config, &device)?;
        println!(
            "Qwen2.5-0.5B's shape: {} parameters ({} by the configuration)",
            model.num_params(),
            config.num_params()
        );
        return Ok(());
    };
    let started = Instant::now();
    let model = load(Path::new(&dir), &device)?;
    println!(
        "loaded {dir}: {} parameters, {} layers, in {:.1} s",
        model.num_params(),
        model.layers.len(),
        started.elapsed().as_secs_f64()
    );
    let ids: Vec<i32> = (0..8).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 8]), &device);
    let logits = model.logits(model.forward(tokens));
    let last: Vec<f32> = logits.slice([0..1, 7..8]).try_into_vec_as::<f32>()?;
    if let Some(best) = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])) {
        println!("the tokens 0..8 predict token {best} next");
    }
    Ok(())
}
