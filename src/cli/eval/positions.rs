//! `--positions shifted`: a causal LM's logits `[B, S, V]` against its own input ids
//! `[B, S]`, logits row `s − 1` scoring id `s`. Every per-token tensor stays `[B, S]`,
//! indexed by the predicted token, so position 0 (predicted by nothing) is never read.
//!
//! The host API takes dense rows, so the file's rows are lined up on the host, in
//! place: logits (or hidden) rows `0 .. S − 1` and per-token values `1 .. S` of each
//! sequence. The call then is exactly the aligned one on the sliced tensors (the same
//! rows in the same order: the same bits), and the outputs are put back into the
//! file's shapes. The moves are O(B·S·V) with no second buffer, next to an upload of
//! the same size.

use wgpu_policy_loss::{Error, HostGrad, HostLoss};

use super::bad;
use super::input::OwnedKept;

/// Which logits row predicts which id (the variants' lines are `--help`'s).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Positions {
    /// logits row (b, s) scores targets[b, s]
    #[default]
    Aligned,
    /// logits row (b, s) scores targets[b, s + 1]
    Shifted,
}

/// The shift of `seqs` sequences of `len ≥ 2` positions.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shift {
    seqs: usize,
    len: usize,
}

impl Shift {
    /// The shift `positions` asks for over rows of leading shape `lead`; `None` when
    /// aligned. Shifting needs sequences of at least two positions.
    pub fn of(positions: Positions, lead: &[usize]) -> Result<Option<Self>, Error> {
        if positions == Positions::Aligned {
            return Ok(None);
        }
        match *lead {
            [seqs, len] if len >= 2 => Ok(Some(Shift { seqs, len })),
            [_, len] => Err(bad(
                "--positions",
                format!(
                    "shifted: sequences of {len} position(s) predict nothing (S must be at \
                     least 2)"
                ),
            )),
            _ => Err(bad(
                "--positions",
                "shifted pairs row s with id s + 1 of the same sequence: it needs [B, S, V] \
                 logits (or [B, S, H] hidden) and [B, S] targets, not [T, V]",
            )),
        }
    }

    /// Rows per sequence once lined up: the positions that predict a token.
    pub fn rows_per_seq(self) -> usize {
        self.len - 1
    }

    /// Zeroes position 0 of a per-token weight (a mask, or the primitive's "read"
    /// marks), so that nothing there is checked before it is dropped.
    pub fn unread(self, v: &mut [f32]) {
        for b in 0..self.seqs {
            v[b * self.len] = 0.0;
        }
    }

    /// A per-token tensor `[B, S]` as the lined-up rows: positions `1 .. S`.
    pub fn tokens<T: Copy>(self, v: &mut Vec<T>) {
        self.drop_position(v, 1, 0);
    }

    /// Rows of width `w` `[B, S, w]` (logits, hidden) as the lined-up rows: positions
    /// `0 .. S − 1`.
    pub fn rows<T: Copy>(self, v: &mut Vec<T>, w: usize) {
        self.drop_position(v, w, self.len - 1);
    }

    /// Removes position `skip` of every sequence, moving the rest down in place.
    fn drop_position<T: Copy>(self, v: &mut Vec<T>, w: usize, skip: usize) {
        let mut to = 0;
        for b in 0..self.seqs {
            for s in (0..self.len).filter(|&s| s != skip) {
                let from = (b * self.len + s) * w;
                v.copy_within(from..from + w, to);
                to += w;
            }
        }
        v.truncate(to);
    }

    /// Puts a zero row of width `w` back at position `at` of every sequence, moving the
    /// rows up in place. From the last row down, so no row is overwritten before it
    /// has moved (each moves to an index at least its own).
    fn insert_position<T: Copy>(self, v: &mut Vec<T>, w: usize, at: usize, zero: T) {
        let len = self.len;
        v.resize(self.seqs * len * w, zero);
        for b in (0..self.seqs).rev() {
            for s in (0..len).rev() {
                let to = (b * len + s) * w;
                if s == at {
                    v[to..to + w].fill(zero);
                    continue;
                }
                let from = (b * (len - 1) + s - usize::from(s > at)) * w;
                v.copy_within(from..from + w, to);
            }
        }
    }

    /// The outputs in the file's shapes: the per-token ones `[B, S]` with 0 at
    /// position 0 (nothing predicts it), the gradient of the logits `[B, S, V]` with
    /// the last position's row 0 (it predicts nothing).
    pub fn restore(self, out: &mut HostLoss, vocab: usize) {
        for v in [&mut out.logprobs, &mut out.entropy, &mut out.lse] {
            self.insert_position(v, 1, 0, 0.0);
        }
        if let Some(g) = out.grad.as_mut() {
            self.restore_grad(g, vocab);
        }
    }

    /// A gradient of rows of width `w` (`grad_logits`, `grad_hidden`) in the file's
    /// shape, the last position's row 0.
    pub fn restore_grad(self, g: &mut HostGrad, w: usize) {
        let bytes = w * g.dtype.size() as usize;
        self.insert_position(&mut g.bytes, bytes, self.len - 1, 0);
    }

    /// The file's row of lined-up row `r`: sequence `r / (S − 1)`, position
    /// `r % (S − 1) + 1`.
    fn file_row(self, r: usize) -> usize {
        let rps = self.len - 1;
        r / rps * self.len + r % rps + 1
    }

    /// An error of the lined-up call, its row renumbered as the file's.
    pub fn error(self, e: Error) -> Error {
        match e {
            Error::InvalidInput { tensor, row, value } => Error::InvalidInput {
                tensor,
                row: self.file_row(row),
                value,
            },
            Error::TargetOutOfRange { row, id, vocab } => Error::TargetOutOfRange {
                row: self.file_row(row),
                id,
                vocab,
            },
            other => other,
        }
    }

    /// The given kept sets of the rows read (positions `1 .. S`), as a CSR of their
    /// own. Those rows are checked here, numbered as the file's (the library would
    /// number the lined-up rows): each range within `keep_ids`, each id in `[0,
    /// vocab)` and none twice. Position 0's ranges and ids are not read.
    pub fn kept(self, (offsets, ids): &OwnedKept, vocab: usize) -> Result<OwnedKept, Error> {
        let mut out = (vec![0u32], Vec::new());
        let mut seen = vec![u32::MAX; vocab];
        for b in 0..self.seqs {
            for r in b * self.len + 1..(b + 1) * self.len {
                let (lo, hi) = (offsets[r], offsets[r + 1]);
                if hi < lo || hi as usize > ids.len() {
                    let why = format!(
                        "row {r} spans {lo}..{hi}, not within keep_ids' {}",
                        ids.len()
                    );
                    return Err(bad("keep_offsets", why));
                }
                for &id in &ids[lo as usize..hi as usize] {
                    let why = match seen.get_mut(id as usize) {
                        None => format!("id {id} outside the vocabulary [0, {vocab})"),
                        Some(s) if *s == r as u32 => format!("id {id} twice"),
                        Some(s) => {
                            *s = r as u32;
                            continue;
                        }
                    };
                    return Err(bad("keep_ids", format!("row {r}: {why}")));
                }
                out.1.extend_from_slice(&ids[lo as usize..hi as usize]);
                out.0.push(out.1.len() as u32);
            }
        }
        Ok(out)
    }
}

/// A run's error with its row renumbered as the file's where the rows were shifted.
pub(super) fn remap(
    shift: Option<Shift>,
    e: Box<dyn std::error::Error>,
) -> Box<dyn std::error::Error> {
    match (shift, e.downcast::<Error>()) {
        (Some(s), Ok(e)) => Box::new(s.error(*e)),
        (None, Ok(e)) => e,
        (_, Err(e)) => e,
    }
}
