//! The batch split as the tests of the split paths want it: into parts of whole
//! sequences, or over vocabulary shards whose partials are gathered in rank order.

use wgpu_policy_loss::reference::sampler::KeptSets;
use wgpu_policy_loss::{
    Context, DType, Error, HostBatch, HostLogits, HostPart, LossConfig, VocabShards,
};

use super::bad;
use super::input::{Columns, OwnedKept};

/// The rows `[r0, r1)` of each of `k` parts of whole sequences, as even as they come.
fn part_rows(rows: usize, seqs: usize, k: usize) -> Vec<(usize, usize)> {
    let rps = rows / seqs.max(1);
    (0..k)
        .map(|i| (i * seqs / k * rps, (i + 1) * seqs / k * rps))
        .collect()
}

/// Each part's kept sets, its offsets from 0 (a part's CSR is its own), for [`split`].
pub(super) fn split_kept(
    kept: Option<KeptSets<'_>>,
    (rows, vocab): (usize, usize),
    seqs: usize,
    k: usize,
) -> Result<Vec<OwnedKept>, Error> {
    let Some(kept) = kept.filter(|_| k > 0 && k <= seqs) else {
        return Ok(Vec::new());
    };
    // the checks of docs/MATH.md#given-kept-sets on the whole CSR first (the parts'
    // are then sound)
    kept.validate(rows, vocab)?;
    Ok(part_rows(rows, seqs, k)
        .into_iter()
        .map(|(r0, r1)| {
            let (a, b) = (kept.offsets[r0], kept.offsets[r1]);
            let offsets = kept.offsets[r0..=r1].iter().map(|&o| o - a).collect();
            (offsets, kept.ids[a as usize..b as usize].to_vec())
        })
        .collect())
}

/// `batch` of `seqs` sequences in `k` parts of whole sequences, as even as they come;
/// `kept`, the parts' kept sets where the batch has them ([`split_kept`]).
pub(super) fn split<'a>(
    part: &HostPart<'a>,
    seqs: usize,
    k: usize,
    kept: &'a [OwnedKept],
) -> Result<Vec<HostPart<'a>>, Error> {
    let batch = &part.batch;
    if k == 0 || k > seqs {
        return Err(bad(
            "--parts",
            format!(
                "{k} parts of {seqs} sequence(s): each part holds whole sequences, so give \
                 1 to {seqs} parts (or [B, S, V] logits with B >= {k})"
            ),
        ));
    }
    let rows = batch.targets.len();
    let rps = rows / seqs;
    let v = batch.vocab as usize;
    let per_token = batch.advantages.len() == rows;
    Ok((0..k)
        .map(|i| {
            let (s0, s1) = (i * seqs / k, (i + 1) * seqs / k);
            let (r0, r1) = (s0 * rps, s1 * rps);
            let logits = match batch.logits {
                HostLogits::F32(x) => HostLogits::F32(&x[r0 * v..r1 * v]),
                HostLogits::F16(x) => HostLogits::F16(&x[r0 * v..r1 * v]),
                HostLogits::Bf16(x) => HostLogits::Bf16(&x[r0 * v..r1 * v]),
            };
            HostPart {
                batch: HostBatch {
                    kept: kept.get(i).map(|(offsets, ids)| KeptSets { offsets, ids }),
                    logits,
                    targets: &batch.targets[r0..r1],
                    mask: &batch.mask[r0..r1],
                    advantages: if per_token {
                        &batch.advantages[r0..r1]
                    } else {
                        &batch.advantages[s0..s1]
                    },
                    old_logprobs: batch.old_logprobs.map(|x| &x[r0..r1]),
                    ref_logprobs: batch.ref_logprobs.map(|x| &x[r0..r1]),
                    temperatures: batch.temperatures.map(|x| &x[r0..r1]),
                    ..*batch
                },
                rollout_logprobs: part.rollout_logprobs.map(|x| &x[r0..r1]),
            }
        })
        .collect())
}

/// `k` shards of `vocab` columns whose widths grow with the rank (1 : 2 : … : k), each
/// at least one column: the uneven split a test of the sharded path wants.
pub(super) fn uneven_shards(vocab: u32, k: u32) -> Result<VocabShards, Error> {
    if k == 0 || k > vocab {
        return Err(bad(
            "--vocab-shards",
            format!("{k} shards of a vocabulary of {vocab}: give 1 to {vocab}"),
        ));
    }
    let (v, k64) = (vocab as u64, k as u64);
    let total = k64 * (k64 + 1) / 2;
    let mut ends: Vec<u32> = (1..=k64)
        .map(|i| (v * (i * (i + 1) / 2) / total) as u32)
        .collect();
    // every shard at least one column, the last ending at the vocabulary
    for i in 0..k as usize {
        let floor = if i == 0 { 1 } else { ends[i - 1] + 1 };
        ends[i] = ends[i].max(floor).min(vocab - (k - 1 - i as u32));
    }
    let widths: Vec<u32> = ends
        .iter()
        .scan(0, |start, &end| {
            let w = end - *start;
            *start = end;
            Some(w)
        })
        .collect();
    VocabShards::new(&widths).map_err(|e| bad("--vocab-shards", e.to_string()))
}

/// The loss of `whole` through the sharded API, every shard on `ctx`: each shard's
/// partials gathered in rank order, then each shard's loss and gradient columns, put
/// back together as one `[rows, V]` gradient. The ranks' metrics and per-row outputs
/// have the same bits (they merged the same partials); rank 0's are returned.
pub(super) fn sharded(
    ctx: &Context,
    config: &LossConfig,
    whole: &HostPart<'_>,
    shards: VocabShards,
    grad_dtype: DType,
) -> Result<wgpu_policy_loss::HostLoss, Box<dyn std::error::Error>> {
    let batch = &whole.batch;
    let vocab = batch.vocab as usize;
    let rows = batch.targets.len();
    let pieces: Vec<Columns> = (0..shards.len())
        .map(|k| Columns::of(&batch.logits, vocab, shards.range(k)))
        .collect();
    let mut gathered = Vec::with_capacity(shards.gathered_bytes(rows as u32) as usize / 4);
    for (k, piece) in pieces.iter().enumerate() {
        let x = (piece.host(), batch.targets);
        let partials = ctx.shard_partials_with(config, &shards, k, x, batch.kept);
        gathered.extend(partials.map_err(super::flag)?);
    }
    let elem = grad_dtype.size() as usize;
    let mut grad = vec![0u8; rows * vocab * elem];
    let mut first = None;
    for (k, piece) in pieces.iter().enumerate() {
        let part = HostPart {
            batch: HostBatch {
                logits: piece.host(),
                vocab: shards.width(k),
                ..*batch
            },
            rollout_logprobs: whole.rollout_logprobs,
        };
        let out = ctx.policy_loss_shard(config, &shards, k, part, &gathered, Some(grad_dtype));
        let out = out.map_err(super::flag)?;
        let g = out.grad.as_ref().ok_or("no gradient came back")?;
        let (o, w) = (
            shards.offset(k) as usize * elem,
            shards.width(k) as usize * elem,
        );
        for (r, src) in g.bytes.chunks(w).enumerate() {
            grad[r * vocab * elem + o..][..w].copy_from_slice(src);
        }
        first.get_or_insert(out);
    }
    let mut out = first.ok_or("no shard")?;
    if let Some(g) = out.grad.as_mut() {
        g.bytes = grad;
    }
    Ok(out)
}
