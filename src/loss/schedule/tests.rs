//! The schedule of every mode, option, part count, column split and shard count, with
//! no GPU: the order of the launches and what they allocate.

use super::*;
use crate::config::{ImportanceSamplingLevel, RolloutCorrection, RolloutLevel, RolloutMode};
use crate::kernels::column_blocks;

/// Ample limits, and a lane layout without a loop limit.
fn caps() -> Caps {
    Caps {
        limits: wgpu::Limits::default(),
        lane_blocks: false,
        loop_limit: None,
    }
}

/// Dense `[rows, vocab]` f32 logits in sequences of `rows_per_seq`, with a separate
/// gradient where `grad`.
fn part(rows: u32, rows_per_seq: u32, vocab: u32, grad: bool) -> PartSpans {
    let dense = |width: u64| RowLayout {
        offset: 0,
        row_stride: width,
        rows_per_seq,
        seq_stride: rows_per_seq as u64 * width,
    };
    PartShape {
        rows,
        layout: dense(vocab as u64),
        vocab,
        dtype: DType::F32,
        targets: dense(1),
        grad: grad.then(|| (dense(vocab as u64), DType::Bf16)),
        has_old: true,
    }
    .spans()
}

/// Every configuration the schedule branches on.
fn configs() -> Vec<LossConfig> {
    let mut out = Vec::new();
    for mode in PolicyLossMode::ALL {
        for option in 0..7 {
            let mut c = LossConfig {
                mode,
                ..LossConfig::default()
            };
            match option {
                1 => c.top_entropy_quantile = Some(0.5),
                2 => {
                    c.top_entropy_quantile = Some(0.5);
                    c.top_entropy_renormalize = true;
                }
                3 => {
                    let level = RolloutLevel::Sequence;
                    c.rollout_correction = Some(RolloutCorrection::new(level, RolloutMode::Mask));
                }
                4 => c.off_policy_mask_threshold = Some(0.5),
                5 if mode.has_sequence_level() => {
                    c.importance_sampling_level = ImportanceSamplingLevel::Sequence;
                }
                6 => {
                    c.use_bias_correction_kl = true;
                    c.kl_coef = 0.1;
                }
                _ => {}
            }
            out.push(c);
        }
    }
    out
}

fn run(
    cfg: &LossConfig,
    parts: &[PartSpans],
    cols: &[ColumnBlock],
    has_old: bool,
    shards: Option<usize>,
) -> Schedule {
    let call = CallShape {
        parts,
        cols,
        has_old,
        shards,
        head: None,
        kept: None,
        computed: false,
    };
    schedule(cfg, &call, &caps()).expect("the test shapes fit")
}

/// The launches a call must have, checked step by step against what the batch-wide
/// terms of docs/MATH.md need: the order is prepare, statistics, select, seq_terms,
/// rows, reduce.
fn check(
    cfg: &LossConfig,
    parts: &[PartSpans],
    cols: &[ColumnBlock],
    has_old: bool,
    shards: Option<usize>,
) {
    let s = run(cfg, parts, cols, has_old, shards);
    let steps: Vec<Step> = s.steps().collect();
    let what = format!(
        "{cfg:?}, {} parts, {} blocks, shards {shards:?}",
        parts.len(),
        cols.len()
    );
    let live: Vec<usize> = (0..parts.len()).filter(|&i| parts[i].rows > 0).collect();
    assert_eq!(steps.last(), Some(&Step::Reduce), "{what}");
    assert_eq!(
        steps.iter().filter(|s| **s == Step::Reduce).count(),
        1,
        "{what}"
    );
    if live.is_empty() {
        assert_eq!(steps, [Step::Reduce], "{what}");
        return;
    }
    // stage of each step, which must not decrease
    let stage = |s: &Step| match s {
        Step::Prepare { .. } => 0,
        Step::KeptSelect { .. } => 1,
        Step::Row { phase, .. } if *phase == PHASE_STATS => 1,
        Step::BlockPartials { .. } | Step::CombineBlocks { .. } | Step::CombineShards { .. } => 1,
        Step::Select { .. } => 2,
        Step::SeqTerms { .. } => 3,
        Step::Row { .. } => 4,
        Step::Reduce => 5,
        Step::HeadLogits { .. }
        | Step::HeadKept { .. }
        | Step::HeadKeptSelect { .. }
        | Step::HeadRow { .. }
        | Step::HeadGrad { .. } => 4,
        Step::HeadFinish => 6,
    };
    assert!(
        steps.windows(2).all(|w| stage(&w[0]) <= stage(&w[1])),
        "{what}: {steps:?}"
    );
    check_parts(cfg, &steps, &live, cols.len(), has_old, shards, &what);
    check_select(cfg, &steps, live.len(), &what);
    // a uniform block per chunk: one chunk a launch for these small parts
    assert!(s.launches.iter().all(|l| l.chunks == 1), "{what}");
}

fn count(steps: &[Step], f: impl Fn(&Step) -> bool) -> usize {
    steps.iter().filter(|s| f(s)).count()
}

/// Each live part: its prepare, its statistics where needed, its sequence pass, and one
/// loss launch per column block.
fn check_parts(
    cfg: &LossConfig,
    steps: &[Step],
    live: &[usize],
    blocks: usize,
    has_old: bool,
    shards: Option<usize>,
    what: &str,
) {
    let prepares = count(steps, |s| matches!(s, Step::Prepare { .. }));
    assert_eq!(
        prepares,
        if live.len() == 1 { 1 } else { live.len() + 1 },
        "{what}"
    );
    let split = blocks > 1 || shards.is_some();
    let first = cfg.needs_stats_first(has_old) || split;
    let loss_phase = if first {
        PHASE_LOSS
    } else {
        PHASE_STATS | PHASE_LOSS
    };
    for &p in live {
        for block in 0..blocks {
            let row = Step::Row {
                part: p,
                block,
                phase: loss_phase,
            };
            assert_eq!(count(steps, |s| *s == row), 1, "{what}: {row:?}");
        }
        let stats = match (shards, blocks) {
            (Some(_), _) => count(steps, |s| *s == Step::CombineShards { part: p }),
            (None, 1) => count(steps, |s| {
                *s == Step::Row {
                    part: p,
                    block: 0,
                    phase: PHASE_STATS,
                }
            }),
            (None, n) => {
                let partials = count(
                    steps,
                    |s| matches!(s, Step::BlockPartials { part, .. } if *part == p),
                );
                assert_eq!(partials, n, "{what}");
                count(steps, |s| *s == Step::CombineBlocks { part: p })
            }
        };
        assert_eq!(stats, first as usize, "{what}: statistics of part {p}");
        let seq = count(steps, |s| *s == Step::SeqTerms { part: p });
        assert_eq!(seq, cfg.needs_sequence_pass() as usize, "{what}");
    }
}

/// Every select phase runs once over each part where it is per part (and there are
/// several), once otherwise.
fn check_select(cfg: &LossConfig, steps: &[Step], live: usize, what: &str) {
    let phases = select::phases(cfg);
    for ph in [
        select::ROLLOUT,
        select::SELECT,
        select::RENORM_GATHER,
        select::RENORM_WEIGHTS,
    ] {
        let runs = count(
            steps,
            |s| matches!(s, Step::Select { phases, .. } if phases & ph != 0),
        );
        let want = match (phases & ph != 0, ph & select::PER_PART != 0 && live > 1) {
            (false, _) => 0,
            (true, true) => live,
            (true, false) => 1,
        };
        assert_eq!(runs, want, "{what}: select phase {ph}");
    }
}

#[test]
fn every_mode_option_part_count_split_and_shard() {
    let (small, other, empty) = (
        part(6, 3, 40, true),
        part(4, 2, 40, false),
        part(0, 3, 40, true),
    );
    let two_blocks = [(0, 20), (20, 20)];
    for cfg in configs() {
        for has_old in [false, true] {
            for parts in [
                vec![],
                vec![small.clone()],
                vec![small.clone(), other.clone()],
                vec![small.clone(), empty.clone(), other.clone()],
            ] {
                for cols in [&[(0, 40)][..], &two_blocks[..]] {
                    for shards in [None, Some(3)] {
                        check(&cfg, &parts, cols, has_old, shards);
                    }
                }
            }
        }
    }
}

#[test]
fn launches_of_one_small_part_follow_the_documented_count() {
    for cfg in configs() {
        for has_old in [false, true] {
            let s = run(&cfg, &[part(1, 1, 1, false)], &[(0, 1)], has_old, None);
            let want = 3
                + cfg.needs_stats_first(has_old) as usize
                + cfg.needs_sequence_pass() as usize
                + (select::phases(&cfg) != 0) as usize;
            assert_eq!(s.launches.len(), want, "{cfg:?}, old {has_old}");
        }
    }
}

#[test]
fn scratch_is_rows_sequences_and_a_uniform_block_per_launch() {
    // 6 rows in 2 sequences, ppo_clip with old log-probs: prepare, rows, reduce
    let s = run(
        &LossConfig::default(),
        &[part(6, 3, 40, true)],
        &[(0, 40)],
        true,
        None,
    );
    assert_eq!(s.launches.len(), 3);
    let want =
        6 * (ROWIN_BYTES + ROWOUT_BYTES) + 2 * SEQINFO_BYTES + SPARE_BYTES + 3 * UNIFORM_BYTES;
    assert_eq!(s.bytes(), want);
    // the entropy mask adds select's per-row records and two launches
    let cfg = LossConfig {
        top_entropy_quantile: Some(0.2),
        ..LossConfig::default()
    };
    let s = run(&cfg, &[part(6, 3, 40, true)], &[(0, 40)], true, None);
    assert_eq!(s.launches.len(), 5);
    assert_eq!(s.bytes(), want + 6 * ROWAUX_BYTES + 2 * UNIFORM_BYTES);
    // an empty call is one reduce over the minimum scratch
    let s = run(&cfg, &[part(0, 3, 40, true)], &[(0, 40)], true, None);
    let min = ROWIN_BYTES + ROWOUT_BYTES + ROWAUX_BYTES + SEQINFO_BYTES + SPARE_BYTES;
    assert_eq!(s.bytes(), min + UNIFORM_BYTES);
}

#[test]
fn column_blocks_add_their_partials_and_combine_starts() {
    let parts = [part(6, 3, 40, false)];
    let cols = [(0, 20), (20, 20)];
    let s = run(&LossConfig::default(), &parts, &cols, true, None);
    assert_eq!(s.scratch.partials, 2 * 6);
    // prepare, 2 partials, combine, 2 row launches, reduce; combine's 3 starts + spare
    assert_eq!(s.launches.len(), 7);
    let extra: u64 = s.launches.iter().map(|l| l.extra_bytes).sum();
    assert_eq!(extra, 4 * 3 + 16);
}

#[test]
fn rows_beyond_one_binding_are_chunked() {
    // a binding of 64 KiB holds 409 rows of 40 f32 logits: 1000 rows take 3 chunks
    let mut caps = caps();
    caps.limits.max_storage_buffer_binding_size = 64 << 10;
    let parts = [part(1000, 1000, 40, false)];
    let cols = column_blocks(&caps, 40, &parts).expect("a row fits");
    assert_eq!(cols, [(0, 40)]);
    let call = CallShape {
        parts: &parts,
        cols: &cols,
        has_old: true,
        shards: None,
        head: None,
        kept: None,
        computed: false,
    };
    let s = schedule(&LossConfig::default(), &call, &caps).expect("chunks fit");
    let rows = s
        .launches
        .iter()
        .find(|l| matches!(l.step, Step::Row { .. }));
    assert_eq!(rows.map(|l| l.chunks), Some(3));
}

#[test]
fn rows_longer_than_one_binding_are_split_into_column_blocks() {
    // a row of 40000 f32 is 160000 bytes: four blocks of a 64 KiB binding (the fewest
    // of a multiple of four columns each, with room for the rows of a chunk)
    let mut caps = caps();
    caps.limits.max_storage_buffer_binding_size = 64 << 10;
    let parts = [part(2, 2, 40_000, false)];
    let cols = column_blocks(&caps, 40_000, &parts).expect("a split fits");
    assert!(cols.len() >= 3, "{cols:?}");
    assert!(cols
        .iter()
        .all(|&(_, w)| w as u64 * 4 <= 64 << 10 && w % 4 == 0));
    assert_eq!(cols.iter().map(|c| c.1).sum::<u32>(), 40_000);
    // and a lane-blocked adapter with a loop limit splits long rows by its loops
    caps.limits.max_storage_buffer_binding_size = 1 << 30;
    caps.lane_blocks = true;
    caps.loop_limit = Some(1000);
    let parts = [part(2, 2, 1_000_000, false)];
    let cols = column_blocks(&caps, 1_000_000, &parts).expect("a split fits");
    let steps = caps.row_lane_steps(cols[0].1 as u64);
    assert!(
        cols.len() > 1 && caps.loops_fit(steps),
        "{} blocks",
        cols.len()
    );
}

/// The head: its statistics pass (logits made, then PHASE_STATS) exactly where the
/// loss needs every row's statistics first, then per chunk its logits (again), loss
/// and gradients in order; ∂L/∂W's rounding last, where it has one.
#[test]
fn the_head_makes_each_chunks_logits_before_its_row_launches() {
    let part = part(30, 10, 1 << 12, false);
    for cfg in configs() {
        for has_old in [false, true] {
            for finish in [false, true] {
                let head = HeadShape {
                    chunks: vec![(0, 13), (13, 26), (26, 30)],
                    vocab_blocks: 2,
                    grad_hidden: true,
                    grad_lm_head: true,
                    finish,
                    bytes: 1000,
                };
                let call = CallShape {
                    parts: std::slice::from_ref(&part),
                    cols: &[(0, 1 << 12)],
                    has_old,
                    shards: None,
                    head: Some(&head),
                    kept: None,
                    computed: false,
                };
                let s = schedule(&cfg, &call, &caps()).unwrap();
                let steps: Vec<Step> = s.steps().collect();
                let what = format!("{cfg:?} has_old {has_old}: {steps:?}");
                let two = cfg.needs_stats_first(has_old);
                let made = count(&steps, |s| matches!(s, Step::HeadLogits { .. }));
                assert_eq!(made, if two { 6 } else { 3 }, "{what}");
                // one chunk: its logits made once, even with a statistics pass
                let one = HeadShape {
                    chunks: vec![(0, 30)],
                    ..head.clone()
                };
                let call1 = CallShape {
                    head: Some(&one),
                    ..call
                };
                let s1 = schedule(&cfg, &call1, &caps()).unwrap();
                assert_eq!(
                    count(&s1.steps().collect::<Vec<_>>(), |s| matches!(
                        s,
                        Step::HeadLogits { .. }
                    )),
                    1,
                    "{what}"
                );
                let stats = count(
                    &steps,
                    |s| matches!(s, Step::HeadRow { phase, .. } if *phase == PHASE_STATS),
                );
                assert_eq!(stats, if two { 3 } else { 0 }, "{what}");
                let grads: Vec<usize> = steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::HeadGrad { chunk } => Some(*chunk),
                        _ => None,
                    })
                    .collect();
                assert_eq!(grads, [0, 1, 2], "{what}");
                // each gradient follows its own chunk's loss launch
                for (i, st) in steps.iter().enumerate() {
                    if let Step::HeadGrad { chunk } = st {
                        let ok = matches!(steps[i - 1], Step::HeadRow { chunk: c, phase } if c == *chunk && phase & PHASE_LOSS != 0);
                        assert!(ok, "{what}");
                    }
                }
                assert_eq!(steps.last() == Some(&Step::HeadFinish), finish, "{what}");
                assert_eq!(s.scratch.head, 1000, "{what}");
                assert!(
                    !steps.iter().any(|s| matches!(s, Step::Row { .. })),
                    "{what}"
                );
            }
        }
    }
}
