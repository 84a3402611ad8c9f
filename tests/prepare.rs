//! The per-sequence token counts and aggregation weights (shaders/prepare.wgsl) and
//! GSPO's sequence ratio (shaders/seq_terms.wgsl) for sequences longer than any one
//! lane should walk: a team of lanes sums each sequence. Summed by one lane, a single
//! sequence of more than 65,534 rows came out wrong on llvmpipe and lavapipe, whose
//! shaders stop looping after 65,535 iterations. Loss and gradient against the f64
//! reference on every adapter. These kernels do not change with the paths (f16,
//! subgroups), so each adapter runs once, on its own.

mod common;

use common::*;
use wgpu_policy_loss::{DType, KlEstimator, LossAggMode, LossConfig, PolicyLossMode};

fn config(mode: PolicyLossMode, (agg, global): (LossAggMode, Option<f32>)) -> LossConfig {
    LossConfig {
        mode,
        loss_agg_mode: agg,
        global_normalizer: global,
        kl_loss_type: KlEstimator::K3,
        kl_coef: 0.1,
        dro_beta: (mode == PolicyLossMode::Dro).then_some(0.3),
        ..LossConfig::default()
    }
}

/// One sequence of 65,535, 65,536 and 131,072 rows (V = 8, some rows masked out, one
/// with weight 0.5), in every aggregation mode; the loss modes take turns, so GSPO's
/// sequence ratio and PPO's old log-probs meet long sequences too.
#[test]
fn one_long_sequence_in_every_aggregation_mode() {
    for (i, rows) in [65_535u32, 65_536, 131_072].into_iter().enumerate() {
        let case = LossCase::new(rows as u64, 1, rows, 8);
        for ctx in natives() {
            for (j, agg) in aggregations(5000.0).into_iter().enumerate() {
                let mode = PolicyLossMode::ALL[(i + j) % PolicyLossMode::ALL.len()];
                check_loss(
                    ctx,
                    &config(mode, agg),
                    &case,
                    DType::F32,
                    Some(DType::F32),
                    ALL_INPUTS,
                );
            }
        }
    }
}

/// Many short sequences, a few long ones: other team sizes (1, 2, 16, 64 lanes a
/// sequence), the same weights.
#[test]
fn every_team_size() {
    let shapes = [(3000u32, 3u32), (300, 37), (40, 700), (3, 9000)];
    for (i, (seqs, rows_per_seq)) in shapes.into_iter().enumerate() {
        let case = LossCase::new(seqs as u64, seqs, rows_per_seq, 8);
        for ctx in natives() {
            for agg in [
                aggregations(5000.0)[i],
                (LossAggMode::SeqMeanTokenMean, None),
            ] {
                check_loss(
                    ctx,
                    &config(PolicyLossMode::Gspo, agg),
                    &case,
                    DType::Bf16,
                    Some(DType::F32),
                    ALL_INPUTS,
                );
            }
        }
    }
}
