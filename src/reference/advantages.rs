//! The advantage estimators of docs/MATH.md#advantages-from-rewards.

/// The advantage estimators of docs/MATH.md#advantages-from-rewards over groups of
/// `group_size` consecutive rewards.
pub fn advantages(
    estimator: crate::config::AdvantageEstimator,
    rewards: &[f64],
    group_size: usize,
) -> Vec<f64> {
    use crate::config::AdvantageEstimator as E;
    // Rewards taken about the first one, so that rewards that all agree give exactly 0
    // (as the kernel does): R − mean, Σ_{j≠i} R_j and the std are unchanged by the shift.
    let shifted = |xs: &[f64]| -> Vec<f64> { xs.iter().map(|x| x - xs[0]).collect() };
    let stats = |xs: &[f64]| {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, var.sqrt())
    };
    if estimator == E::ReinforcePlusPlus {
        if rewards.len() < 2 {
            return vec![0.0; rewards.len()];
        }
        let d = shifted(rewards);
        let (mean, std) = stats(&d);
        return d.iter().map(|r| (r - mean) / (std + 1e-6)).collect();
    }
    // GPG's scale: the batch's size over its non-zero rewards
    let alpha = rewards.len() as f64 / rewards.iter().filter(|&&r| r != 0.0).count().max(1) as f64;
    rewards
        .chunks(group_size)
        .flat_map(|g| {
            let d = shifted(g);
            let (mean, std) = stats(&d);
            let sum: f64 = d.iter().sum();
            let n = g.len() as f64;
            d.iter()
                .map(|&r| match estimator {
                    _ if g.len() < 2 => 0.0,
                    E::Grpo => (r - mean) / (std + 1e-6),
                    E::GrpoNoStd => r - mean,
                    E::Gpg => alpha * (r - mean),
                    _ => r - (sum - r) / (n - 1.0),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
