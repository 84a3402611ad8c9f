//! `eval`'s output file: the per-row tensors (logprobs, entropy, lse), the gradient and the scalar metrics,
//! under the names of the CLI contract (docs/MATH.md#the-eval-command).

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use wgpu_policy_loss::{DType, HostGrad, HostLoss};

use crate::cli::CliResult;

/// Writes `out` (per-row tensors of `lead`) and the gradients `grads` (name, shape,
/// values) to `path`, and its summary line to stdout.
pub(super) fn write(
    out: &HostLoss,
    lead: &[usize],
    grads: &[(&str, Vec<usize>, &HostGrad)],
    path: &Path,
) -> CliResult {
    write_with(out, lead, grads, path, true)
}

/// [`write`] without the loss's scalars: the log-prob primitive's outputs are per row.
pub(super) fn write_rows(
    out: &HostLoss,
    lead: &[usize],
    grads: &[(&str, Vec<usize>, &HostGrad)],
    path: &Path,
) -> CliResult {
    write_with(out, lead, grads, path, false)
}

/// A head call's outputs: the shift (where `--positions shifted`) undone on the per-row
/// tensors and on ∂L/∂hidden `shape` (`[.., h]`), then written with `grad_hidden` and
/// `grad_lm_head` `[vocab, h]`; `scalars` as [`write`], else as [`write_rows`].
#[allow(clippy::too_many_arguments)]
pub(super) fn write_head(
    out: &mut HostLoss,
    (grad_hidden, grad_lm_head): (Option<&mut HostGrad>, Option<&HostGrad>),
    shift: Option<super::positions::Shift>,
    (shape, h, vocab): (&[usize], usize, usize),
    lead: &[usize],
    path: &Path,
    scalars: bool,
) -> CliResult {
    let gh = grad_hidden.ok_or("no grad_hidden came back")?;
    if let Some(s) = shift {
        s.restore(out, vocab);
        s.restore_grad(gh, h);
    }
    let gw = grad_lm_head.ok_or("no grad_lm_head came back")?;
    let grads = [
        ("grad_hidden", shape.to_vec(), &*gh),
        ("grad_lm_head", vec![vocab, h], gw),
    ];
    write_with(out, lead, &grads, path, scalars)
}

fn write_with(
    out: &HostLoss,
    lead: &[usize],
    grads: &[(&str, Vec<usize>, &HostGrad)],
    path: &Path,
    with_scalars: bool,
) -> CliResult {
    let m = out.metrics;
    let scalars = [
        ("loss", m.loss),
        ("pg_clipfrac", m.pg_clipfrac),
        ("pg_clipfrac_lower", m.pg_clipfrac_lower),
        ("ppo_kl", m.ppo_kl),
        ("kl", m.kl),
        ("entropy_mean", m.entropy_mean),
        ("nonfinite_rows", m.nonfinite_rows),
        ("cov_selected_frac", m.cov_selected_frac),
        ("entropy_mask_frac", m.entropy_mask_frac),
        ("rollout_is_mean", m.rollout_is_mean),
        ("rollout_is_min", m.rollout_is_min),
        ("rollout_is_max", m.rollout_is_max),
        ("rollout_is_clipfrac", m.rollout_is_clipfrac),
        ("rollout_logp_diff_max", m.rollout_logp_diff_max),
        ("invalid_input_rows", m.invalid_input_rows),
        ("off_policy_mask_frac", m.off_policy_mask_frac),
        ("vespo_phi_seq_mean", m.vespo_phi_seq_mean),
    ];
    let scalar_bytes: Vec<(&str, [u8; 4])> =
        scalars.iter().map(|&(n, v)| (n, v.to_le_bytes())).collect();
    let dtype = |d: DType| match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::BF16,
    };
    let per_row = [
        ("logprobs", &out.logprobs),
        ("entropy", &out.entropy),
        ("lse", &out.lse),
    ];
    let mut tensors: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, v) in per_row {
        let t = TensorView::new(Dtype::F32, lead.to_vec(), bytemuck::cast_slice(v))?;
        tensors.push((name.into(), t));
    }
    for (name, shape, g) in grads {
        let t = TensorView::new(dtype(g.dtype), shape.clone(), &g.bytes)?;
        tensors.push((name.to_string(), t));
    }
    for (name, b) in scalar_bytes.iter().filter(|_| with_scalars) {
        tensors.push((name.to_string(), TensorView::new(Dtype::F32, vec![], b)?));
    }
    safetensors::tensor::serialize_to_file(tensors, None, path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if !with_scalars {
        println!(
            "logprobs, entropy, lse and the gradient -> {}",
            path.display()
        );
        return Ok(());
    }
    println!(
        "loss {:.6}  entropy_mean {:.4}  pg_clipfrac {:.4}  nonfinite_rows {}  -> {}",
        m.loss,
        m.entropy_mean,
        m.pg_clipfrac,
        m.nonfinite_rows,
        path.display()
    );
    Ok(())
}
