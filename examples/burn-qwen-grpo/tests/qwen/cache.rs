//! The KV-cached forward (a prompt, then one token a step) against the full forward.

use burn_qwen_grpo::{load, StoreDtype};

use crate::common::{
    devices, max_abs, max_err, random_tokens, scratch, token_tensor, values, write_checkpoint,
    Shape,
};

/// The bound on `|cached − full|`, relative to the largest logit. Both are the same
/// f32 computation: a masked key weighs exactly 0 in the full forward (exp(−∞)), so
/// the two differ only where a kernel's reduction order depends on its operands'
/// shapes (the scores and values over T keys, one query row or S of them). That is a
/// few roundings of one dot product, ~1e-6 of the logits' scale; 1e-5 is the bound.
const TOL: f64 = 1e-5;

#[test]
fn the_cached_forward_matches_the_full_forward_at_every_position() {
    let shape = Shape::tiny(false, 1e4);
    let dir = scratch("cache");
    write_checkpoint(&dir, &shape, &shape.random_tensors(21), StoreDtype::F32);
    for (adapter, device) in devices() {
        let model = load(&dir, device).expect("load");
        let (b, s, v) = (3, 9, shape.vocab);
        let tokens = random_tokens(22, b, s, v);
        let full = values(model.logits(model.forward(token_tensor(&tokens, device))));
        let scale = max_abs(&full.iter().map(|&x| x as f64).collect::<Vec<_>>());

        // a one-token prompt (every position decoded), then a prompt of four
        for prompt in [1, 4] {
            let mut cache = model.cache();
            let mut got = vec![0f32; b * s * v];
            let mut at = 0;
            while at < s {
                let n = if at == 0 { prompt } else { 1 };
                let chunk: Vec<Vec<usize>> =
                    tokens.iter().map(|t| t[at..at + n].to_vec()).collect();
                let hidden = model.forward_cached(token_tensor(&chunk, device), &mut cache);
                let logits = values(model.logits(hidden));
                for (i, row) in logits.chunks(v).enumerate() {
                    let (seq, pos) = (i / n, at + i % n);
                    got[(seq * s + pos) * v..][..v].copy_from_slice(row);
                }
                at += n;
                assert_eq!(cache.len(), at, "positions cached");
            }
            assert_eq!(cache.batch(), Some(b));
            assert!(
                got.iter().all(|x| x.is_finite()),
                "non-finite cached logits"
            );
            let want: Vec<f64> = full.iter().map(|&x| x as f64).collect();
            let err = max_err(&got, &want);
            eprintln!(
            "{adapter}, prompt {prompt}: max |cached − full| = {err:.2e}, {:.2e} of the largest logit {scale:.2}",
            err / scale
        );
            assert!(
                err <= TOL * scale,
                "{adapter}, prompt {prompt}: cached logits off the full forward's by {err:e}"
            );
        }
    }
}
