//! docs/MATH.md#the-fused-linear-head in f64: the logits `x = h·Wᵀ` of the widened
//! inputs, and the head's gradients from the logits' gradient Gz.

/// `x = h·Wᵀ`: `hidden` is `rows × h`, `lm_head` is `V × h`, both row-major; the
/// result is `rows × V`.
pub fn head_logits(hidden: &[f64], lm_head: &[f64], h: usize) -> Vec<f64> {
    let h = h.max(1);
    let (rows, vocab) = (hidden.len() / h, lm_head.len() / h);
    let mut x = vec![0.0; rows * vocab];
    for r in 0..rows {
        let hr = &hidden[r * h..(r + 1) * h];
        for v in 0..vocab {
            let wv = &lm_head[v * h..(v + 1) * h];
            x[r * vocab + v] = hr.iter().zip(wv).map(|(a, b)| a * b).sum();
        }
    }
    x
}

/// `(∂L/∂h, ∂L/∂W) = (Gz·W, Gzᵀ·h)` from `gz` (`rows × V`); rows whose mask is 0 take
/// no part (their ∂L/∂h row is 0 and their hidden row, NaN or not, is not read).
pub fn head_grads(
    gz: &[f64],
    hidden: &[f64],
    lm_head: &[f64],
    h: usize,
    mask: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let h = h.max(1);
    let (rows, vocab) = (hidden.len() / h, lm_head.len() / h);
    let mut dh = vec![0.0; rows * h];
    let mut dw = vec![0.0; vocab * h];
    for r in (0..rows).filter(|&r| mask[r] != 0.0) {
        let g = &gz[r * vocab..(r + 1) * vocab];
        for (v, &gv) in g.iter().enumerate() {
            for k in 0..h {
                dh[r * h + k] += gv * lm_head[v * h + k];
                dw[v * h + k] += gv * hidden[r * h + k];
            }
        }
    }
    (dh, dw)
}

/// What bounds the error of each element of `(∂L/∂h, ∂L/∂W)` (see
/// [`compare::head_grad`](super::compare::head_grad)): per element of ∂L/∂h,
/// `[Σ_v |Gz_tv|·|W_vk|, Σ_v |W_vk|]`; of ∂L/∂W, `[Σ_t |Gz_tv|·|h_tk|, Σ_t |h_tk|]` over
/// the rows whose mask is not 0.
pub fn head_magnitudes(
    gz: &[f64],
    hidden: &[f64],
    lm_head: &[f64],
    h: usize,
    mask: &[f64],
) -> (Vec<[f64; 2]>, Vec<[f64; 2]>) {
    let h = h.max(1);
    let (rows, vocab) = (hidden.len() / h, lm_head.len() / h);
    let mut dh = vec![[0.0; 2]; rows * h];
    let mut dw = vec![[0.0; 2]; vocab * h];
    for r in (0..rows).filter(|&r| mask[r] != 0.0) {
        let g = &gz[r * vocab..(r + 1) * vocab];
        for (v, &gv) in g.iter().enumerate() {
            for k in 0..h {
                let (w, x) = (lm_head[v * h + k].abs(), hidden[r * h + k].abs());
                dh[r * h + k][0] += gv.abs() * w;
                dh[r * h + k][1] += w;
                dw[v * h + k][0] += gv.abs() * x;
                dw[v * h + k][1] += x;
            }
        }
    }
    (dh, dw)
}
