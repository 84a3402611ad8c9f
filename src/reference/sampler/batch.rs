//! A batch's rows under the sampler's distribution: the per-token temperatures and the
//! given kept set (CSR) checked as the table of docs/MATH.md#bad-input says, then each
//! row made.

use super::{sampled_row, SampledRow, Sampler};
use crate::error::{Error, Result};
use crate::reference::{mask_in, Batch};

/// The sampler's side of a batch: its options, the per-row temperatures (instead of
/// `LossConfig::temperature`) and a given kept set as CSR (`keep_offsets` of rows + 1,
/// `keep_ids`; vLLM's `SamplingMask`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerBatch<'a> {
    /// The scalar options: softcap, temperature, top-k, top-p, min-p.
    pub sampler: Sampler,
    /// One temperature per row, in place of the sampler's scalar one (which must then
    /// be 1); checked on read rows.
    pub temperatures: Option<&'a [f64]>,
    /// The engine's kept sets (docs/MATH.md#given-kept-sets); not with top-k, top-p or
    /// min-p.
    pub keep: Option<KeptSets<'a>>,
}

/// A given kept set for every row: row r keeps `ids[offsets[r]..offsets[r + 1]]`
/// (docs/MATH.md#given-kept-sets); an empty range keeps every token.
#[derive(Clone, Copy, Debug)]
pub struct KeptSets<'a> {
    /// `rows + 1` offsets into `ids`: from 0, never decreasing, ending at `ids.len()`.
    pub offsets: &'a [u32],
    /// Every row's kept token ids, in `[0, V)`, in any order, none twice in a row.
    pub ids: &'a [u32],
}

impl KeptSets<'_> {
    /// The shape rules of docs/MATH.md#given-kept-sets for the offsets (an `Err` naming
    /// `keep_offsets`).
    fn check_shape(&self, rows: usize) -> Result<()> {
        let o = self.offsets;
        let bad = |why: String| Err(Error::arg("keep_offsets", why));
        if o.len() != rows + 1 {
            return bad(format!(
                "{} values for {rows} rows (want rows + 1)",
                o.len()
            ));
        }
        if o[0] != 0 {
            return bad(format!("starts at {}, not 0", o[0]));
        }
        if let Some(r) = (0..rows).find(|&r| o[r + 1] < o[r]) {
            return bad(format!("decreases at row {r}"));
        }
        if o[rows] as usize != self.ids.len() {
            return bad(format!(
                "ends at {}, but keep_ids holds {}",
                o[rows],
                self.ids.len()
            ));
        }
        Ok(())
    }

    /// The checks of docs/MATH.md#given-kept-sets, as the host API and `eval` make
    /// them: the offsets' shape (an `Err` naming `keep_offsets`), then every row's ids,
    /// read or not, in `[0, vocab)` and none twice (naming `keep_ids` and the row).
    /// O(rows + ids), with one mark per vocabulary entry reused across rows.
    pub fn validate(&self, rows: usize, vocab: usize) -> Result<()> {
        self.check_shape(rows)?;
        let mut seen = vec![u32::MAX; vocab];
        for r in 0..rows {
            for &id in self.row(r) {
                let bad = |why: String| Err(Error::arg("keep_ids", format!("row {r}: {why}")));
                match seen.get_mut(id as usize) {
                    None => return bad(format!("id {id} outside the vocabulary [0, {vocab})")),
                    Some(s) if *s == r as u32 => return bad(format!("id {id} twice")),
                    Some(s) => *s = r as u32,
                }
            }
        }
        Ok(())
    }

    /// Whether row `r` keeps token `y` (an empty range keeps every token).
    pub fn keeps(&self, r: usize, y: u32) -> bool {
        let ids = self.row(r);
        ids.is_empty() || ids.contains(&y)
    }

    /// Row `r`'s kept ids (empty: every token).
    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[self.offsets[r] as usize..self.offsets[r + 1] as usize]
    }
}

impl SamplerBatch<'_> {
    /// Every row of `b` under the sampler at the scalar temperature `tau` (or the
    /// per-row ones). A row the loss reads (masked in) must have a good temperature and
    /// its target in its kept set; every row's kept ids are checked, read or not. Each
    /// `Err` names the tensor or option, and the row where one is at fault.
    pub fn rows(&self, b: &Batch<'_>, tau: f64) -> Result<Vec<SampledRow>> {
        let rows = b.rows();
        self.sampler.validate()?;
        if self.keep.is_some() && self.sampler.computes_set() {
            return Err(Error::arg(
                "keep_offsets",
                "a given kept set together with top_k, top_p or min_p",
            ));
        }
        if let Some(t) = self.temperatures {
            if tau != 1.0 {
                return Err(Error::arg(
                    "temperature",
                    "per-token temperatures together with a scalar temperature other than 1",
                ));
            }
            if t.len() != rows {
                return Err(Error::arg(
                    "temperatures",
                    format!("{} values for {rows} rows", t.len()),
                ));
            }
        }
        if let Some(k) = &self.keep {
            k.check_shape(rows)?;
        }
        (0..rows).map(|r| self.row(b, tau, r)).collect()
    }

    fn row(&self, b: &Batch<'_>, tau: f64, r: usize) -> Result<SampledRow> {
        let read = mask_in(b.mask[r]);
        let tau_r = self.temperatures.map_or(tau, |t| t[r]);
        // an unread row's temperature is ignored (docs/MATH.md#bad-input): any good one
        // will do
        let tau_r = if read || (tau_r.is_finite() && tau_r > 0.0) {
            tau_r
        } else {
            1.0
        };
        let given = self.keep.as_ref().map(|k| k.row(r));
        let x = &b.logits[r * b.vocab..(r + 1) * b.vocab];
        let at_row = |e: Error| match e {
            Error::InvalidArgument { arg, reason } => Error::arg(arg, format!("row {r}: {reason}")),
            other => other,
        };
        let row = sampled_row(x, tau_r, &self.sampler, given).map_err(at_row)?;
        if read {
            row.logp(b.targets[r] as usize).map_err(at_row)?;
        }
        Ok(row)
    }
}
