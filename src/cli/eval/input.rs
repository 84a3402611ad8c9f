//! The input file's tensors, checked against one another: the names, shapes and
//! dtypes of `eval`'s contract (docs/MATH.md#the-eval-command).

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgpu_policy_loss::half::{bf16, f16};
use wgpu_policy_loss::reference::sampler::KeptSets;
use wgpu_policy_loss::{Error, HostBatch, HostHead, HostLogits, HostPart};

use super::bad;
use super::positions::{Positions, Shift};

/// What the loss is computed from: logits, or hidden states and the lm-head weight.
pub(super) enum Source {
    Logits(Columns),
    Head {
        hidden: Columns,
        lm_head: Columns,
        /// hidden's shape, `[T, H]` or `[B, S, H]`, and H.
        shape: Vec<usize>,
        h: usize,
    },
}

/// Every tensor of the input, read into host memory.
pub(super) struct Input {
    /// The logits' shape, `[T, V]` or `[B, S, V]` (with hidden: the shape they would
    /// have), and its leading dimensions.
    pub shape: Vec<usize>,
    pub lead: Vec<usize>,
    pub vocab: usize,
    pub rows_per_seq: Option<u32>,
    pub seqs: usize,
    pub source: Source,
    pub mask: Vec<f32>,
    pub targets: Vec<u32>,
    pub advantages: Vec<f32>,
    pub old: Option<Vec<f32>>,
    pub refp: Option<Vec<f32>>,
    pub rollout: Option<Vec<f32>>,
    /// The sampler's per-token temperatures.
    pub temps: Option<Vec<f32>>,
    /// The sampler's given kept sets: offsets (rows + 1) and ids.
    pub keep: Option<OwnedKept>,
    /// Where `--positions shifted` lined the rows up: `shape`, `lead` and the head's
    /// `shape` stay the file's (the outputs'), every other field holds the rows read.
    pub shift: Option<Shift>,
}

/// `[T, W]` or `[B, S, W]`: the leading dimensions, W and the rows of a sequence.
pub(super) fn rows_of(
    name: &'static str,
    shape: &[usize],
    w: &str,
) -> Result<(Vec<usize>, usize, Option<u32>), Error> {
    match shape {
        [t, v] => Ok((vec![*t], *v, None)),
        [b, s, v] => Ok((vec![*b, *s], *v, Some(*s as u32))),
        _ => Err(bad(
            name,
            format!("has shape {shape:?}, expected [T, {w}] or [B, S, {w}]"),
        )),
    }
}

/// What the input's main tensors give: the logits' shape, its leading dimensions, V,
/// the rows of a sequence, and the values.
type Read = (Vec<usize>, Vec<usize>, usize, Option<u32>, Source);

/// The logits, or hidden and lm_head (never both, never one without the other).
pub(super) fn source(st: &SafeTensors<'_>) -> Result<Read, Error> {
    let (logits, hidden, lm_head) = (
        tensor(st, "logits")?,
        tensor(st, "hidden")?,
        tensor(st, "lm_head")?,
    );
    match (logits, hidden, lm_head) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(bad(
            "hidden",
            "the input holds both `logits` and `hidden`/`lm_head`: give logits, or hidden and lm_head",
        )),
        (Some(x), None, None) => {
            let shape = x.shape().to_vec();
            let (lead, vocab, rps) = rows_of("logits", &shape, "V")?;
            if vocab == 0 || lead.iter().product::<usize>() == 0 {
                return Err(bad("logits", format!("has an empty shape {shape:?}")));
            }
            Ok((shape, lead, vocab, rps, Source::Logits(Columns::read("logits", &x)?)))
        }
        (None, Some(_), None) => Err(bad("lm_head", "missing from the input file: hidden needs lm_head [V, H]")),
        (None, None, Some(_)) => Err(bad("hidden", "missing from the input file: lm_head needs hidden [T, H] or [B, S, H]")),
        (None, None, None) => Err(bad("logits", "missing from the input file (or give hidden and lm_head)")),
        (None, Some(h), Some(w)) => head_source(&h, &w),
    }
}

fn head_source(h: &TensorView<'_>, w: &TensorView<'_>) -> Result<Read, Error> {
    let hshape = h.shape().to_vec();
    let (lead, dim, rps) = rows_of("hidden", &hshape, "H")?;
    if dim == 0 || lead.iter().product::<usize>() == 0 {
        return Err(bad("hidden", format!("has an empty shape {hshape:?}")));
    }
    let vocab = match w.shape() {
        [v, k] if *k == dim && *v > 0 => *v,
        s => {
            return Err(bad(
                "lm_head",
                format!("has shape {s:?}, expected [V, {dim}] (V ≥ 1; hidden's H = {dim})"),
            ))
        }
    };
    let hidden = Columns::read("hidden", h)?;
    if w.dtype() != h.dtype() {
        return Err(bad(
            "lm_head",
            format!(
                "has dtype {:?}, hidden {:?}: both need one dtype",
                w.dtype(),
                h.dtype()
            ),
        ));
    }
    let lm_head = Columns::read("lm_head", w)?;
    let mut shape = lead.clone();
    shape.push(vocab);
    let source = Source::Head {
        hidden,
        lm_head,
        shape: hshape,
        h: dim,
    };
    Ok((shape, lead, vocab, rps, source))
}

impl Input {
    pub fn read(st: &SafeTensors<'_>, positions: Positions) -> Result<Self, Error> {
        let (shape, lead, vocab, rows_per_seq, source) = source(st)?;
        let shift = Shift::of(positions, &lead)?;
        let seqs = if lead.len() == 2 { lead[0] } else { 1 };
        let mask_t = required(st, "mask")?;
        expect_shape("mask", &mask_t, &lead)?;
        let mut mask = mask_values(&mask_t)?;
        if let Some(s) = shift {
            s.unread(&mut mask);
        }
        let targets_t = required(st, "targets")?;
        expect_shape("targets", &targets_t, &lead)?;
        let targets = target_ids(&targets_t, &mask, vocab)?;
        let adv_t = required(st, "advantages")?;
        if adv_t.shape() != [seqs] && adv_t.shape() != lead.as_slice() {
            return Err(bad(
                "advantages",
                format!(
                    "has shape {:?}, expected [{seqs}] or {lead:?}",
                    adv_t.shape()
                ),
            ));
        }
        let advantages = f32s("advantages", &adv_t)?;
        let optional = |name: &'static str| -> Result<Option<Vec<f32>>, Error> {
            match tensor(st, name)? {
                Some(t) => {
                    expect_shape(name, &t, &lead)?;
                    Ok(Some(f32s(name, &t)?))
                }
                None => Ok(None),
            }
        };
        let mut input = Input {
            old: optional("old_logprobs")?,
            refp: optional("ref_logprobs")?,
            rollout: optional("rollout_logprobs")?,
            temps: optional("temperatures")?,
            keep: kept_sets(st, lead.iter().product())?,
            shape,
            lead,
            vocab,
            rows_per_seq,
            seqs,
            source,
            mask,
            targets,
            advantages,
            shift,
        };
        if let Some(s) = shift {
            input.line_up(s)?;
        }
        Ok(input)
    }

    /// The rows `s` shifts read, lined up (see [`super::positions`]).
    fn line_up(&mut self, s: Shift) -> Result<(), Error> {
        match &mut self.source {
            Source::Logits(x) => x.line_up(s, self.vocab),
            Source::Head { hidden, h, .. } => hidden.line_up(s, *h),
        }
        s.tokens(&mut self.mask);
        s.tokens(&mut self.targets);
        if self.advantages.len() != self.seqs {
            s.tokens(&mut self.advantages);
        }
        let per_token = [&mut self.old, &mut self.refp, &mut self.rollout];
        for v in per_token.into_iter().chain([&mut self.temps]).flatten() {
            s.tokens(v);
        }
        if let Some(k) = &self.keep {
            self.keep = Some(s.kept(k, self.vocab)?);
        }
        self.rows_per_seq = Some(s.rows_per_seq() as u32);
        Ok(())
    }

    /// The given kept sets, as the host API takes them.
    pub fn kept(&self) -> Option<KeptSets<'_>> {
        self.keep
            .as_ref()
            .map(|(offsets, ids)| KeptSets { offsets, ids })
    }

    /// The head's batch, as the host API takes it (`None` for logits).
    pub fn head(&self, chunk_rows: Option<u32>) -> Option<HostHead<'_>> {
        let Source::Head {
            hidden, lm_head, h, ..
        } = &self.source
        else {
            return None;
        };
        Some(HostHead {
            kept: self.kept(),
            temperatures: self.temps.as_deref(),
            hidden: hidden.host(),
            lm_head: lm_head.host(),
            hidden_dim: *h as u32,
            rows_per_seq: self.rows_per_seq,
            targets: &self.targets,
            mask: &self.mask,
            advantages: &self.advantages,
            old_logprobs: self.old.as_deref(),
            ref_logprobs: self.refp.as_deref(),
            rollout_logprobs: self.rollout.as_deref(),
            chunk_rows,
        })
    }

    /// The whole batch, as the host API takes it.
    /// (The hidden rows stand in for the logits where the input is the head's: the
    /// per-row checks read the shape and per-row inputs alone.)
    pub fn part(&self) -> HostPart<'_> {
        let (logits, vocab) = match &self.source {
            Source::Logits(x) => (x.host(), self.vocab as u32),
            Source::Head { hidden, h, .. } => (hidden.host(), *h as u32),
        };
        HostPart {
            batch: HostBatch {
                // the head's ids are W's rows, checked with the head (not hidden's columns)
                kept: match &self.source {
                    Source::Logits(_) => self.kept(),
                    Source::Head { .. } => None,
                },
                temperatures: self.temps.as_deref(),
                logits,
                vocab,
                rows_per_seq: self.rows_per_seq,
                targets: &self.targets,
                mask: &self.mask,
                advantages: &self.advantages,
                old_logprobs: self.old.as_deref(),
                ref_logprobs: self.refp.as_deref(),
            },
            rollout_logprobs: self.rollout.as_deref(),
        }
    }
}

pub(super) fn tensor<'a>(
    st: &SafeTensors<'a>,
    name: &'static str,
) -> Result<Option<TensorView<'a>>, Error> {
    match st.tensor(name) {
        Ok(t) => Ok(Some(t)),
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => Ok(None),
        Err(e) => Err(bad(name, e.to_string())),
    }
}

fn required<'a>(st: &SafeTensors<'a>, name: &'static str) -> Result<TensorView<'a>, Error> {
    tensor(st, name)?.ok_or_else(|| bad(name, "missing from the input file"))
}

pub(super) fn expect_shape(
    name: &'static str,
    t: &TensorView<'_>,
    shape: &[usize],
) -> Result<(), Error> {
    if t.shape() != shape {
        return Err(bad(
            name,
            format!("has shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    Ok(())
}

pub(super) fn f32s(name: &'static str, t: &TensorView<'_>) -> Result<Vec<f32>, Error> {
    match t.dtype() {
        Dtype::F32 => Ok(bytemuck::pod_collect_to_vec(t.data())),
        d => Err(bad(name, format!("has dtype {d:?}, expected F32"))),
    }
}

fn mask_values(t: &TensorView<'_>) -> Result<Vec<f32>, Error> {
    match t.dtype() {
        Dtype::F32 => Ok(bytemuck::pod_collect_to_vec(t.data())),
        Dtype::U8 | Dtype::BOOL => Ok(t.data().iter().map(|&b| b as f32).collect()),
        d => Err(bad(
            "mask",
            format!("has dtype {d:?}, expected F32, U8 or BOOL"),
        )),
    }
}

/// Token ids as u32; an id is only checked (and must lie in [0, V)) where the mask is > 0.
/// A kept set's CSR, read: offsets (rows + 1) and ids.
pub(super) type OwnedKept = (Vec<u32>, Vec<u32>);

/// `keep_offsets` `[rows + 1]` and `keep_ids` `[nnz]`, I32 or I64, both or neither; a
/// negative value or one past u32 is an error naming the tensor (the rest of the checks
/// of docs/MATH.md#given-kept-sets are the library's).
pub(super) fn kept_sets(st: &SafeTensors<'_>, rows: usize) -> Result<Option<OwnedKept>, Error> {
    let (offsets, ids) = match (tensor(st, "keep_offsets")?, tensor(st, "keep_ids")?) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(bad("keep_ids", "missing: keep_offsets needs keep_ids")),
        (None, Some(_)) => return Err(bad("keep_offsets", "missing: keep_ids needs keep_offsets")),
        (Some(o), Some(i)) => (o, i),
    };
    let ints = |name: &'static str, t: &TensorView<'_>, len: Option<usize>| {
        if t.shape().len() != 1 || len.is_some_and(|n| t.shape() != [n]) {
            let want = len.map_or("[nnz]".to_string(), |n| format!("[{n}] (rows + 1)"));
            return Err(bad(
                name,
                format!("has shape {:?}, expected {want}", t.shape()),
            ));
        }
        let v: Vec<i64> = match t.dtype() {
            Dtype::I64 => bytemuck::pod_collect_to_vec(t.data()),
            Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
                .into_iter()
                .map(i64::from)
                .collect(),
            d => return Err(bad(name, format!("has dtype {d:?}, expected I32 or I64"))),
        };
        v.iter()
            .enumerate()
            .map(|(i, &x)| {
                u32::try_from(x)
                    .map_err(|_| bad(name, format!("element {i} is {x}, outside [0, 2^32)")))
            })
            .collect::<Result<Vec<u32>, Error>>()
    };
    Ok(Some((
        ints("keep_offsets", &offsets, Some(rows + 1))?,
        ints("keep_ids", &ids, None)?,
    )))
}

pub(super) fn target_ids(
    t: &TensorView<'_>,
    mask: &[f32],
    vocab: usize,
) -> Result<Vec<u32>, Error> {
    let ids: Vec<i64> = match t.dtype() {
        Dtype::I64 => bytemuck::pod_collect_to_vec(t.data()),
        Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
            .into_iter()
            .map(i64::from)
            .collect(),
        Dtype::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(t.data())
            .into_iter()
            .map(i64::from)
            .collect(),
        d => {
            return Err(bad(
                "targets",
                format!("has dtype {d:?}, expected I64, I32 or U32"),
            ))
        }
    };
    ids.iter()
        .zip(mask)
        .enumerate()
        .map(|(row, (&id, &m))| {
            if m > 0.0 && !(0..vocab as i64).contains(&id) {
                Err(Error::TargetOutOfRange {
                    row,
                    id,
                    vocab: vocab as u32,
                })
            } else {
                Ok(u32::try_from(id).unwrap_or(u32::MAX))
            }
        })
        .collect()
}

/// Host logits in their dtype: the input's, or one shard's columns of them.
pub(super) enum Columns {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Columns {
    pub fn of(logits: &HostLogits<'_>, vocab: usize, cols: std::ops::Range<u32>) -> Self {
        fn take<T: Copy>(x: &[T], vocab: usize, cols: &std::ops::Range<u32>) -> Vec<T> {
            x.chunks(vocab)
                .flat_map(|row| &row[cols.start as usize..cols.end as usize])
                .copied()
                .collect()
        }
        match logits {
            HostLogits::F32(x) => Columns::F32(take(x, vocab, &cols)),
            HostLogits::F16(x) => Columns::F16(take(x, vocab, &cols)),
            HostLogits::Bf16(x) => Columns::Bf16(take(x, vocab, &cols)),
        }
    }

    /// A tensor's values (F32, F16 or BF16).
    pub(super) fn read(name: &'static str, t: &TensorView<'_>) -> Result<Self, Error> {
        Ok(match t.dtype() {
            Dtype::F32 => Columns::F32(bytemuck::pod_collect_to_vec(t.data())),
            Dtype::F16 => Columns::F16(bytemuck::pod_collect_to_vec(t.data())),
            Dtype::BF16 => Columns::Bf16(bytemuck::pod_collect_to_vec(t.data())),
            d => {
                return Err(bad(
                    name,
                    format!("has dtype {d:?}, expected F32, F16 or BF16"),
                ))
            }
        })
    }

    /// Rows of width `w` lined up for `s`.
    pub(super) fn line_up(&mut self, s: Shift, w: usize) {
        match self {
            Columns::F32(x) => s.rows(x, w),
            Columns::F16(x) => s.rows(x, w),
            Columns::Bf16(x) => s.rows(x, w),
        }
    }

    pub fn host(&self) -> HostLogits<'_> {
        match self {
            Columns::F32(x) => HostLogits::F32(x),
            Columns::F16(x) => HostLogits::F16(x),
            Columns::Bf16(x) => HostLogits::Bf16(x),
        }
    }
}
