//! Views over the caller's device buffers: where each row starts, in elements,
//! without copying anything. A row index `r` is split into a sequence `r / rows_per_seq`
//! and a position `r % rows_per_seq`, so full-sequence logits `[B, S, V]` with the
//! seed's shift (position `s` predicts token `s + 1`), or the response slice of a
//! larger batch, are described by offsets and strides alone.

use crate::error::{Error, Result};

/// Element type of the logits, hidden states and lm-head weight a call reads, and of the
/// gradients it writes. Every kernel computes in f32 whatever the dtype; a gradient is
/// rounded to its dtype once. Parsed from `"f32"`, `"f16"`, `"bf16"` (and `"float32"`,
/// `"half"`, `"bfloat16"`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE single precision, 4 bytes.
    F32,
    /// IEEE half precision, 2 bytes: read natively where the device has `SHADER_F16`,
    /// else unpacked from u32 words.
    F16,
    /// bfloat16: the high half of an IEEE f32, so the kernel widens it with a shift.
    Bf16,
}

impl DType {
    /// Every dtype.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::Bf16];

    /// Bytes per element.
    pub const fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    /// `"f32"`, `"f16"` or `"bf16"`, as `Display` and the CLI write it.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            _ => Err(Error::arg(
                "dtype",
                format!("`{s}` is not one of f32, f16, bf16"),
            )),
        }
    }
}

/// Where the rows of a 2-D (or batched 3-D) tensor lie in a buffer, in elements.
///
/// Element `(r, j)` is at `offset + (r / rows_per_seq) * seq_stride + (r % rows_per_seq) * row_stride + j`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    /// Elements before row 0 (the view's byte offset divided by the element size).
    pub offset: u64,
    /// Elements between consecutive rows of one sequence.
    pub row_stride: u64,
    /// Rows per sequence; `u32::MAX` for a plain 2-D view (one sequence).
    pub rows_per_seq: u32,
    /// Elements between the first rows of consecutive sequences.
    pub seq_stride: u64,
}

impl Default for RowLayout {
    /// One element per row, dense, one sequence.
    fn default() -> Self {
        RowLayout {
            offset: 0,
            row_stride: 1,
            rows_per_seq: u32::MAX,
            seq_stride: 0,
        }
    }
}

impl RowLayout {
    /// Element index of the first element of row `r`.
    pub fn row_start(&self, r: u64) -> u64 {
        let seq = r / self.rows_per_seq as u64;
        let pos = r % self.rows_per_seq as u64;
        self.offset + seq * self.seq_stride + pos * self.row_stride
    }

    /// Half-open element range touched by rows `[0, rows)` with `width` elements each.
    pub fn span(&self, rows: u64, width: u64) -> (u64, u64) {
        if rows == 0 {
            return (self.offset, self.offset);
        }
        self.span_rows(0, rows, width)
    }

    /// Half-open element range touched by rows `[first, end)` (non-empty) with `width`
    /// elements each. Strides are non-negative, so rows rise within a sequence and
    /// sequences rise with their index; but a sequence may start before the previous
    /// one ends (a short sequence stride). So the lowest element is in `first` or in the
    /// first row of the next sequence, the highest in the last row or in the row before
    /// the last sequence.
    pub fn span_rows(&self, first: u64, end: u64, width: u64) -> (u64, u64) {
        let rps = self.rows_per_seq.max(1) as u64;
        let last = end - 1;
        let mut lo = self.row_start(first);
        let next_seq = (first / rps + 1) * rps;
        if next_seq <= last {
            lo = lo.min(self.row_start(next_seq));
        }
        let mut hi = self.row_start(last) + width;
        let last_seq = (last / rps) * rps;
        if last_seq > first {
            hi = hi.max(self.row_start(last_seq - 1) + width);
        }
        (lo, hi)
    }

    /// Whether two of rows `[0, rows)` (each `width` elements) share an element, which
    /// a written tensor (a gradient) must not: both rows would write it.
    pub fn rows_overlap(&self, rows: u32, width: u64) -> bool {
        if rows < 2 || width == 0 {
            return false;
        }
        let rps = self.rows_per_seq.max(1).min(rows) as u64;
        let seqs = (rows as u64).div_ceil(rps);
        // the usual case: rows apart within a sequence, sequences apart
        let rows_apart = rps < 2 || self.row_stride >= width;
        let seqs_apart = seqs < 2 || self.seq_stride >= (rps - 1) * self.row_stride + width;
        if rows_apart && seqs_apart {
            return false;
        }
        // anything else (interleaved sequences, say): sort the row starts
        let mut starts: Vec<u64> = (0..rows as u64).map(|r| self.row_start(r)).collect();
        starts.sort_unstable();
        starts.windows(2).any(|w| w[1] - w[0] < width)
    }

    fn check(&self, arg: &'static str, rows: u32) -> Result<()> {
        if rows > 0 && self.rows_per_seq == 0 {
            return Err(Error::arg(arg, "rows_per_seq must be at least 1"));
        }
        if rows > self.rows_per_seq && !rows.is_multiple_of(self.rows_per_seq) {
            return Err(Error::arg(
                arg,
                format!(
                    "{rows} rows do not split into sequences of {} rows",
                    self.rows_per_seq
                ),
            ));
        }
        Ok(())
    }
}

fn byte_offset_to_elements(arg: &'static str, bytes: u64, elem: u64) -> Result<u64> {
    if !bytes.is_multiple_of(elem) {
        return Err(Error::arg(
            arg,
            format!("byte offset {bytes} is not a multiple of the element size {elem}"),
        ));
    }
    Ok(bytes / elem)
}

/// Checks that `[begin, end)` elements of `elem` bytes lie in `buffer` and that it can be
/// bound as a storage buffer.
fn check_buffer(arg: &'static str, buffer: &wgpu::Buffer, end_elem: u64, elem: u64) -> Result<()> {
    if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::arg(arg, "buffer lacks BufferUsages::STORAGE"));
    }
    let need = end_elem * elem;
    if need > buffer.size() {
        return Err(Error::arg(
            arg,
            format!(
                "view needs {need} bytes but the buffer holds {}",
                buffer.size()
            ),
        ));
    }
    Ok(())
}

/// Logits `[rows, vocab]` in a caller's buffer: each row `vocab` contiguous elements,
/// the rows wherever [`RowLayout`] puts them (a dense matrix, the shifted rows of
/// full-sequence logits, a response slice), read in place, never copied. A call checks
/// that the rows lie inside the buffer, that it has `STORAGE` usage, and that the rows
/// of a sequence lie at least `vocab` elements apart (an `Err` naming `logits`).
#[derive(Clone, Copy, Debug)]
pub struct LogitsView<'a> {
    /// The caller's buffer; needs `BufferUsages::STORAGE`.
    pub buffer: &'a wgpu::Buffer,
    /// The elements' type.
    pub dtype: DType,
    /// The number of rows `T` the call reads (row `r` scores target `r`).
    pub rows: u32,
    /// The vocabulary size `V`: the elements of each row; at least 1.
    pub vocab: u32,
    /// Where each row starts, in elements of `dtype`.
    pub layout: RowLayout,
}

impl<'a> LogitsView<'a> {
    /// Dense `[rows, vocab]` at the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer, dtype: DType, rows: u32, vocab: u32) -> Self {
        LogitsView {
            buffer,
            dtype,
            rows,
            vocab,
            layout: RowLayout {
                offset: 0,
                row_stride: vocab as u64,
                rows_per_seq: u32::MAX,
                seq_stride: 0,
            },
        }
    }

    /// Full-sequence logits `[batch, seq_len, vocab]` with the seed's shift: row `(b, s)`
    /// for `s < seq_len - 1` predicts token `s + 1`; the last position of each sequence
    /// is skipped. Pair with [`TargetsView::shifted`].
    pub fn shifted(
        buffer: &'a wgpu::Buffer,
        dtype: DType,
        batch: u32,
        seq_len: u32,
        vocab: u32,
    ) -> Self {
        Self::response(
            buffer,
            dtype,
            batch,
            seq_len,
            vocab,
            1,
            seq_len.saturating_sub(1),
        )
    }

    /// The logits that predict a response of `response_len` tokens following a prompt
    /// of `prompt_len` tokens, inside full-sequence logits `[batch, seq_len, vocab]`:
    /// positions `prompt_len - 1 .. prompt_len - 1 + response_len` of every sequence.
    pub fn response(
        buffer: &'a wgpu::Buffer,
        dtype: DType,
        batch: u32,
        seq_len: u32,
        vocab: u32,
        prompt_len: u32,
        response_len: u32,
    ) -> Self {
        let v = vocab as u64;
        LogitsView {
            buffer,
            dtype,
            rows: batch * response_len,
            vocab,
            layout: RowLayout {
                offset: prompt_len.saturating_sub(1) as u64 * v,
                row_stride: v,
                rows_per_seq: response_len.max(1),
                seq_stride: seq_len as u64 * v,
            },
        }
    }

    /// Places the tensor `bytes` into the buffer (a multiple of the element size): the
    /// offset adds to the one a constructor derived from the shape (e.g. the prompt
    /// positions skipped by [`LogitsView::response`]).
    pub fn with_byte_offset(mut self, bytes: u64) -> Result<Self> {
        self.layout.offset += byte_offset_to_elements("logits", bytes, self.dtype.size())?;
        Ok(self)
    }

    /// Sets the distance between consecutive rows, in elements (≥ vocab).
    pub fn with_row_stride(mut self, elements: u64) -> Self {
        self.layout.row_stride = elements;
        self
    }

    /// Groups the rows into sequences of `rows_per_seq` rows whose first rows lie
    /// `seq_stride` elements apart.
    pub fn with_sequences(mut self, rows_per_seq: u32, seq_stride: u64) -> Self {
        self.layout.rows_per_seq = rows_per_seq;
        self.layout.seq_stride = seq_stride;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.vocab == 0 {
            return Err(Error::arg("logits", "vocab must be at least 1"));
        }
        self.layout.check("logits", self.rows)?;
        let rows_in_a_seq = self.rows.min(self.layout.rows_per_seq);
        if rows_in_a_seq > 1 && self.layout.row_stride < self.vocab as u64 {
            return Err(Error::arg(
                "logits",
                format!(
                    "row stride {} is smaller than vocab {}",
                    self.layout.row_stride, self.vocab
                ),
            ));
        }
        let (_, end) = self.layout.span(self.rows as u64, self.vocab as u64);
        check_buffer("logits", self.buffer, end, self.dtype.size())
    }
}

/// Token ids (u32), one per row, in a caller's buffer: row `r`'s id is element
/// `layout.row_start(r)`. Read only on the rows a call reads (masked-in rows of a loss);
/// an id outside `[0, vocab)` there is counted as bad input, never read past.
#[derive(Clone, Copy, Debug)]
pub struct TargetsView<'a> {
    /// The caller's buffer; needs `BufferUsages::STORAGE`.
    pub buffer: &'a wgpu::Buffer,
    /// Where each row's id lies, in u32 elements (`row_stride` 1 for dense ids).
    pub layout: RowLayout,
}

impl<'a> TargetsView<'a> {
    /// Dense ids, one per row, at the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        TargetsView {
            buffer,
            layout: RowLayout {
                offset: 0,
                row_stride: 1,
                rows_per_seq: u32::MAX,
                seq_stride: 0,
            },
        }
    }

    /// Full-sequence ids `[batch, seq_len]`, shifted by one to pair with
    /// [`LogitsView::shifted`]: row `(b, s)` reads id `(b, s + 1)`.
    pub fn shifted(buffer: &'a wgpu::Buffer, seq_len: u32) -> Self {
        Self::response(buffer, seq_len, 1, seq_len.saturating_sub(1))
    }

    /// The response ids inside full-sequence ids `[batch, seq_len]`: positions
    /// `prompt_len .. prompt_len + response_len`. Pair with [`LogitsView::response`].
    pub fn response(
        buffer: &'a wgpu::Buffer,
        seq_len: u32,
        prompt_len: u32,
        response_len: u32,
    ) -> Self {
        TargetsView {
            buffer,
            layout: RowLayout {
                offset: prompt_len as u64,
                row_stride: 1,
                rows_per_seq: response_len.max(1),
                seq_stride: seq_len as u64,
            },
        }
    }

    /// Places the ids `bytes` into the buffer (a multiple of 4), added to the offset a
    /// constructor derived from the shape, as [`LogitsView::with_byte_offset`].
    pub fn with_byte_offset(mut self, bytes: u64) -> Result<Self> {
        self.layout.offset += byte_offset_to_elements("targets", bytes, 4)?;
        Ok(self)
    }

    /// Sets the distance between consecutive ids, in elements.
    pub fn with_row_stride(mut self, elements: u64) -> Self {
        self.layout.row_stride = elements;
        self
    }

    /// Groups the rows into sequences, as [`LogitsView::with_sequences`].
    pub fn with_sequences(mut self, rows_per_seq: u32, seq_stride: u64) -> Self {
        self.layout.rows_per_seq = rows_per_seq;
        self.layout.seq_stride = seq_stride;
        self
    }

    pub(crate) fn validate(&self, rows: u32) -> Result<()> {
        self.layout.check("targets", rows)?;
        let (_, end) = self.layout.span(rows as u64, 1);
        check_buffer("targets", self.buffer, end, 4)
    }
}

/// The sampler's kept sets of a call's rows, as CSR (vLLM's `SamplingMask`;
/// docs/MATH.md#given-kept-sets): row r keeps the token ids `ids[offsets[r] ..
/// offsets[r + 1]]`, u32 each, in any order, none twice. An empty range keeps every
/// token. Ids are of the whole vocabulary (with shards too). On the device path the
/// caller vouches for the offsets' shape: a kernel clamps them into `ids` and never
/// reads or writes out of bounds, and a read row whose target is not among its ids is
/// bad input ([`crate::RowInput::Targets`]).
#[derive(Clone, Copy, Debug)]
pub struct KeptView<'a> {
    /// rows + 1 u32 offsets, from byte `offsets_at`: starting at 0, never decreasing,
    /// ending at `len`.
    pub offsets: &'a wgpu::Buffer,
    /// The byte offset of the first offset in `offsets` (a multiple of 4).
    pub offsets_at: u64,
    /// `len` u32 ids, from byte `ids_at`.
    pub ids: &'a wgpu::Buffer,
    /// The byte offset of the first id in `ids` (a multiple of 4).
    pub ids_at: u64,
    /// The number of ids of all rows together (`nnz`, the last offset).
    pub len: u32,
}

impl<'a> KeptView<'a> {
    /// Offsets and `len` ids, each from the start of its buffer.
    pub fn new(offsets: &'a wgpu::Buffer, ids: &'a wgpu::Buffer, len: u32) -> Self {
        KeptView {
            offsets,
            offsets_at: 0,
            ids,
            ids_at: 0,
            len,
        }
    }

    /// The same with the offsets and the ids from these byte offsets of their buffers.
    pub fn with_byte_offsets(mut self, offsets_at: u64, ids_at: u64) -> Self {
        self.offsets_at = offsets_at;
        self.ids_at = ids_at;
        self
    }

    /// Both buffers hold what the view names for `rows` rows; the first elements.
    pub(crate) fn validate(&self, rows: u32) -> Result<(u64, u64)> {
        let first = byte_offset_to_elements("keep_offsets", self.offsets_at, 4)?;
        check_buffer("keep_offsets", self.offsets, first + rows as u64 + 1, 4)?;
        let ids = byte_offset_to_elements("keep_ids", self.ids_at, 4)?;
        check_buffer("keep_ids", self.ids, ids + self.len as u64, 4)?;
        Ok((first, ids))
    }
}

/// A contiguous run of f32 values in a caller's buffer: a per-row or per-sequence input
/// (mask, advantages, log-probs, temperatures) or output (log-probs, entropies, `lse`),
/// value `i` at byte `offset + 4·i`.
#[derive(Clone, Copy, Debug)]
pub struct F32View<'a> {
    /// The caller's buffer; needs `BufferUsages::STORAGE`. A call checks that it holds
    /// as many values as the call's rows (or sequences) from `offset`.
    pub buffer: &'a wgpu::Buffer,
    /// Byte offset of the first value (a multiple of 4).
    pub offset: u64,
}

impl<'a> F32View<'a> {
    /// The values from the start of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        F32View { buffer, offset: 0 }
    }

    /// The values from byte `byte_offset` of `buffer` (a multiple of 4, else the call
    /// using the view is an `Err`).
    pub fn at(buffer: &'a wgpu::Buffer, byte_offset: u64) -> Self {
        F32View {
            buffer,
            offset: byte_offset,
        }
    }

    pub(crate) fn validate(&self, arg: &'static str, len: u32) -> Result<u64> {
        let first = byte_offset_to_elements(arg, self.offset, 4)?;
        check_buffer(arg, self.buffer, first + len as u64, 4)?;
        Ok(first)
    }
}

/// Outputs must not share a buffer with inputs: wgpu forbids one buffer bound both
/// read-only and writable in a dispatch (and reports it only when the caller finishes
/// the encoder), and overlapping ranges would be overwritten before they are read. An
/// argument may appear on both sides (logits written in place).
pub(crate) fn check_aliasing(
    reads: &[(&'static str, &wgpu::Buffer)],
    writes: &[(&'static str, &wgpu::Buffer)],
) -> Result<()> {
    for (w, wb) in writes {
        if let Some((r, _)) = reads.iter().find(|(r, rb)| r != w && *rb == *wb) {
            return Err(Error::arg(
                w,
                format!(
                    "shares its buffer with the input `{r}`; outputs need buffers of their own"
                ),
            ));
        }
    }
    Ok(())
}
