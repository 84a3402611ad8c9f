//! The policy loss of a vocabulary-sharded batch over MPI: every rank holds the logits
//! of its slice of the vocabulary (a tensor-parallel lm-head) on a wgpu device of its
//! own, reduces them to 16 bytes of partial statistics a row, all-gathers those with
//! the other ranks, and computes the loss of the whole vocabulary and the gradient of
//! its own columns. Each rank checks itself against the unsharded f64 reference, and
//! the ranks check that they agree on the loss bit for bit.
//!
//! ```text
//! cargo build --release -p mpi-shards && mpirun -n 2 target/release/mpi-shards
//! ```
//!
//! As root, add `--allow-run-as-root`; with more ranks than cores (`-n 3` on two),
//! add `--oversubscribe`. `scripts/mpi-example.sh` installs Open MPI where it is
//! missing and runs both. A failed check exits non-zero, and so does `mpirun`.

use std::error::Error;
use std::ops::Range;

use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;
use wgpu_policy_loss::{
    reference, Context, DType, HostBatch, HostLogits, KlEstimator, LossConfig, PolicyLossMode,
    VocabShards,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const SEQS: usize = 4;
const ROWS_PER_SEQ: usize = 8;
const ROWS: usize = SEQS * ROWS_PER_SEQ;
/// Prime, so that no split of it is even.
const VOCAB: u32 = 5003;
const SEED: u64 = 0x5eed_5a4d;

fn main() {
    let Some(universe) = mpi::initialize() else {
        eprintln!("mpi-shards: MPI was already initialised");
        std::process::exit(1);
    };
    let world = universe.world();
    let passed = run(&world);
    // MPI_Finalize on every rank before exiting, so that mpirun sees a clean exit
    // status rather than a process that vanished mid-job
    drop(universe);
    if !passed {
        std::process::exit(1);
    }
}

/// One rank's part; true when every rank passed its checks and all agree on the loss.
fn run(world: &SimpleCommunicator) -> bool {
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let cfg = LossConfig {
        mode: PolicyLossMode::PpoClip,
        kl_coef: 0.1,
        kl_loss_type: KlEstimator::K3,
        entropy_coeff: 0.01,
        clip_ratio_c: Some(3.0),
        ..Default::default()
    };
    let report = match shard_loss(world, &cfg, rank, size) {
        Ok(r) => r,
        Err(e) => {
            // the other ranks may be waiting in the all-gather for this one: only an
            // abort releases them
            eprintln!("rank {rank}/{size}: {e}");
            world.abort(1)
        }
    };

    // Every rank merged the same gathered partials in the same order, so every rank
    // must hold the same loss, bit for bit: gather the bits (and who passed) to check.
    let mine = [report.loss.to_bits(), report.ok as u32];
    let mut all = vec![0u32; 2 * size];
    world.all_gather_into(&mine[..], &mut all[..]);
    let bits: Vec<u32> = all.chunks(2).map(|c| c[0]).collect();
    let failed: Vec<usize> = (0..size).filter(|&r| all[2 * r + 1] == 0).collect();
    let agree = bits.iter().all(|&b| b == bits[0]);
    // Rank 0 prints every rank's line: mpirun forwards each rank's output as it
    // comes, in no set order, so one writer keeps them in rank order.
    let lines = all_gather_strings(world, &report.line);
    if rank == 0 {
        for line in &lines {
            println!("{line}");
        }
        let rows = ROWS as u32;
        let shards = report.shards;
        println!(
            "exchanged: {size} ranks × 16 bytes = {} bytes a row, {} bytes for {rows} rows",
            shards.gathered_bytes(rows) / rows as u64,
            shards.gathered_bytes(rows),
        );
        if !agree {
            let hex: Vec<String> = bits.iter().map(|b| format!("{b:#010x}")).collect();
            println!("the ranks disagree on the loss bits: {}", hex.join(", "));
        } else if failed.is_empty() {
            println!(
                "all {size} ranks agree on the loss bit for bit ({:#010x}) — ok",
                bits[0]
            );
        }
        if !failed.is_empty() {
            println!("ranks {failed:?} failed their checks");
        }
    }
    agree && failed.is_empty()
}

/// Every rank's `s`, in rank order, on every rank: the lengths, then the bytes.
fn all_gather_strings(world: &SimpleCommunicator, s: &str) -> Vec<String> {
    let mut counts = vec![0 as Count; world.size() as usize];
    world.all_gather_into(&[s.len() as Count][..], &mut counts[..]);
    let displs: Vec<Count> = counts
        .iter()
        .scan(0, |at, &c| {
            *at += c;
            Some(*at - c)
        })
        .collect();
    let mut bytes = vec![0u8; counts.iter().sum::<Count>() as usize];
    let mut parts = PartitionMut::new(&mut bytes[..], &counts[..], &displs[..]);
    world.all_gather_varcount_into(s.as_bytes(), &mut parts);
    counts
        .iter()
        .zip(&displs)
        .map(|(&c, &d)| String::from_utf8_lossy(&bytes[d as usize..(d + c) as usize]).into_owned())
        .collect()
}

/// What one rank found.
struct Report {
    loss: f32,
    ok: bool,
    line: String,
    shards: VocabShards,
}

/// This rank's loss over its shard of the vocabulary, checked against the reference.
/// An `Err` is something that stopped the computation (no device, a bad argument);
/// a wrong answer is a report that is not ok.
fn shard_loss(
    world: &SimpleCommunicator,
    cfg: &LossConfig,
    rank: usize,
    size: usize,
) -> Result<Report> {
    // every rank builds the same batch from the same seed: no broadcast needed
    let batch = Batch::new(SEED);
    let shards = uneven_split(VOCAB, size)?;
    let cols = shards.range(rank);
    let width = shards.width(rank);
    let ctx = Context::new().map_err(|e| format!("no wgpu device: {e}"))?;

    // A real trainer's lm-head produces only its own columns; here each rank cuts
    // them out of the whole logits it built.
    let mine = columns(&batch.logits, &cols);

    // Step 1: this shard's partials, rows × 4 f32 (max, Σexp, Σexp·z, target logit).
    let partials =
        ctx.shard_partials(cfg, &shards, rank, HostLogits::F32(&mine), &batch.targets)?;

    // The exchange: every rank's partials, in rank order, on every rank. MPI's
    // all-gather places rank r's block at r × len, which is the order the combine
    // step expects (the shards are numbered as the ranks are).
    let mut gathered = vec![0f32; size * partials.len()];
    world.all_gather_into(&partials[..], &mut gathered[..]);

    // Step 2: whole-vocabulary statistics from the gathered partials, then the loss
    // and the gradient of this rank's columns only.
    let out = ctx.policy_loss_shard(
        cfg,
        &shards,
        rank,
        HostBatch {
            kept: None,
            temperatures: None,
            logits: HostLogits::F32(&mine),
            vocab: width,
            rows_per_seq: Some(ROWS_PER_SEQ as u32),
            targets: &batch.targets,
            mask: &batch.mask,
            advantages: &batch.advantages,
            old_logprobs: Some(&batch.old),
            ref_logprobs: Some(&batch.refp),
        },
        &gathered,
        Some(DType::F32),
    )?;
    let grad = out
        .grad
        .as_ref()
        .ok_or("policy_loss_shard returned no gradient")?
        .to_f32();

    // The unsharded loss in f64, over the whole vocabulary, from the same f32 inputs.
    let want = batch.reference(cfg)?;
    let mut why = Vec::new();
    let loss = out.metrics.loss;
    if !close(loss as f64, want.loss, 1e-5) {
        why.push(format!("loss {loss} is not the reference {:.7}", want.loss));
    }
    // the gradient of this shard's columns, against the same columns of the reference
    let v = VOCAB as usize;
    let (mut grad_err, mut grad_max) = (0f64, 0f64);
    for (r, row) in grad.chunks(width as usize).enumerate() {
        let reference = &want.grad[r * v + cols.start as usize..r * v + cols.end as usize];
        for (&g, &w) in row.iter().zip(reference) {
            let d = (g as f64 - w).abs();
            // f64::max drops a NaN: keep it as an infinite error, which fails below
            grad_err = if d.is_nan() {
                f64::INFINITY
            } else {
                grad_err.max(d)
            };
            grad_max = grad_max.max(w.abs());
        }
    }
    if grad.len() != ROWS * width as usize || grad_err > 1e-4 * grad_max + 1e-9 {
        why.push(format!(
            "gradient error {grad_err:.2e} over {} values (largest |reference| {grad_max:.2e})",
            grad.len()
        ));
    }
    // per-row log-probs and entropies of the whole vocabulary, where the mask counts
    let mut rows_off = Vec::new();
    for r in (0..ROWS).filter(|&r| batch.mask[r] > 0.0) {
        for (what, got, w) in [
            ("log-prob", out.logprobs[r], want.logp[r]),
            ("entropy", out.entropy[r], want.entropy[r]),
        ] {
            if !close(got as f64, w, 1e-5) {
                rows_off.push(format!("row {r}: {what} {got} is not the reference {w:.7}"));
            }
        }
    }
    if rows_off.len() > 2 {
        let more = rows_off.len() - 2;
        rows_off.truncate(2);
        rows_off.push(format!("{more} more rows off"));
    }
    why.extend(rows_off);

    let ok = why.is_empty();
    let line = format!(
        "rank {rank}/{size} ({}): columns {}..{}, loss {loss:.7} (reference {:.7}), \
         max grad error {grad_err:.1e} — {}",
        ctx.describe(),
        cols.start,
        cols.end,
        want.loss,
        if ok {
            "ok".to_string()
        } else {
            format!("FAILED: {}", why.join("; "))
        }
    );
    Ok(Report {
        loss,
        ok,
        line,
        shards,
    })
}

/// `|got − want| ≤ tol·|want| + tol`, false for NaN.
fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * want.abs() + tol
}

/// A visibly uneven split: shard k gets a share of the vocabulary ∝ k + 1 (V = 5003 over
/// 3 ranks: 833, 1668, 2502 columns), falling back to Megatron's ⌈V/K⌉ split when so
/// many ranks would leave the first shard without a column.
fn uneven_split(vocab: u32, ranks: usize) -> Result<VocabShards> {
    let total = (ranks * (ranks + 1) / 2) as u64;
    let edge = |k: usize| (vocab as u64 * (k * (k + 1) / 2) as u64 / total) as u32;
    let widths: Vec<u32> = (0..ranks).map(|k| edge(k + 1) - edge(k)).collect();
    Ok(if widths.contains(&0) {
        VocabShards::even(vocab, ranks as u32)?
    } else {
        VocabShards::new(&widths)?
    })
}

/// Columns `cols` of every row of `logits` (`VOCAB` wide), row-major.
fn columns(logits: &[f32], cols: &Range<u32>) -> Vec<f32> {
    logits
        .chunks(VOCAB as usize)
        .flat_map(|row| &row[cols.start as usize..cols.end as usize])
        .copied()
        .collect()
}

/// The whole batch, as every rank builds it.
struct Batch {
    /// ROWS × VOCAB.
    logits: Vec<f32>,
    targets: Vec<u32>,
    mask: Vec<f32>,
    /// One per sequence.
    advantages: Vec<f32>,
    old: Vec<f32>,
    refp: Vec<f32>,
}

impl Batch {
    fn new(seed: u64) -> Batch {
        let mut rng = SplitMix(seed);
        let v = VOCAB as usize;
        let mut logits: Vec<f32> = (0..ROWS * v).map(|_| rng.uniform(-4.0, 4.0)).collect();
        let targets: Vec<u32> = (0..ROWS)
            .map(|_| (rng.next() % VOCAB as u64) as u32)
            .collect();
        // the sampled token is usually likelier than the rest: log-probs from about
        // −9 (no boost) to near 0, rather than all alike
        for (r, &y) in targets.iter().enumerate() {
            logits[r * v + y as usize] += rng.uniform(0.0, 12.0);
        }
        // sequence b ends in b padding rows, masked out
        let mask = (0..ROWS)
            .map(|r| (r % ROWS_PER_SEQ < ROWS_PER_SEQ - r / ROWS_PER_SEQ) as u8 as f32)
            .collect();
        let advantages = (0..SEQS).map(|_| rng.uniform(-2.0, 2.0)).collect();
        // The rollout's and the reference policy's log-probs: the true ones moved a
        // little, so that some ratios leave [0.8, 1.2] and the clips engage.
        let truth: Vec<f64> = logits
            .chunks(v)
            .zip(&targets)
            .map(|(row, &y)| {
                let row: Vec<f64> = row.iter().map(|&x| x as f64).collect();
                reference::row_stats(&row, y as usize, 1.0).logp
            })
            .collect();
        let mut near = |spread: f32| -> Vec<f32> {
            truth
                .iter()
                .map(|&t| (t as f32 + rng.uniform(-spread, spread)).min(0.0))
                .collect()
        };
        let old = near(0.3);
        let refp = near(0.5);
        Batch {
            logits,
            targets,
            mask,
            advantages,
            old,
            refp,
        }
    }

    /// The f64 reference of the unsharded batch.
    fn reference(&self, cfg: &LossConfig) -> Result<reference::LossOutput> {
        let wide = |x: &[f32]| -> Vec<f64> { x.iter().map(|&v| v as f64).collect() };
        let (logits, mask, adv) = (wide(&self.logits), wide(&self.mask), wide(&self.advantages));
        let (old, refp) = (wide(&self.old), wide(&self.refp));
        Ok(reference::policy_loss(
            cfg,
            &reference::Batch {
                logits: &logits,
                vocab: VOCAB as usize,
                rows_per_seq: ROWS_PER_SEQ,
                targets: &self.targets,
                mask: &mask,
                advantages: &adv,
                old_logp: Some(&old),
                ref_logp: Some(&refp),
            },
        )?)
    }
}

/// SplitMix64: a few lines of deterministic randomness, the same on every rank.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}
