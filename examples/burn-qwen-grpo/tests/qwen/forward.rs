//! The loaded model's logits against the f64 reference on the same checkpoint.

use burn::module::Module;
use burn_qwen_grpo::{load, save, Qwen2, Qwen2Config, StoreDtype};

use crate::common::{
    device, devices, max_abs, max_err, random_tokens, scratch, token_tensor, values,
    write_checkpoint, Shape,
};
use crate::reference::Reference;

/// The bound on `|logit − reference|`, relative to the largest reference logit.
///
/// The model computes in f32 (u = 2⁻²⁴ ≈ 6e-8), the reference in f64 on the same
/// weights (a bf16 or f16 checkpoint widens exactly, so storage adds nothing). A logit
/// sits at the end of about 20 reductions in sequence (per layer: two norms, the q/k,
/// o, gate/up and down projections, the scores, the softmax's sum and the values;
/// then the final norm and the head), each of at most 48 terms. A reduction of n terms
/// in f32 errs by about √n·u of its terms' scale when the roundings fall at random
/// (n·u at worst), and the norms keep the layers from amplifying what came before, so
/// the errors add to about √20·√48·u ≈ 2e-6 of the logits' scale (6e-5 at the very
/// worst). 2e-5 is ten times that estimate, room for the device's exp and sqrt (a few
/// ulp in WGSL), while a wrong layout, a mis-rotated head, a head reading the wrong
/// key/value group or a mask off by one moves the logits by their own size.
const TOL: f64 = 2e-5;

fn check_against_reference(name: &str, shape: Shape, dtype: StoreDtype, seed: u64) {
    let dir = scratch(name);
    write_checkpoint(&dir, &shape, &shape.random_tensors(seed), dtype);
    for (adapter, device) in devices() {
        let name = &format!("{name} on {adapter}");
        let model = load(&dir, device).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference = Reference::read(&dir, shape);
        let (b, s) = (3, 7);
        let tokens = random_tokens(seed + 1, b, s, shape.vocab);

        let hidden = model.forward(token_tensor(&tokens, device));
        assert_eq!(hidden.dims(), [b, s, shape.hidden], "{name}: hidden states");
        assert_eq!(
            model.lm_head_weight().dims(),
            [shape.vocab, shape.hidden],
            "{name}: lm-head weight"
        );
        let got = values(model.logits(hidden));
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{name}: non-finite logits"
        );
        let want: Vec<f64> = tokens.iter().flat_map(|t| reference.logits(t)).collect();
        let scale = max_abs(&want);
        let err = max_err(&got, &want);
        eprintln!(
        "{name}: max |logit − f64 reference| = {err:.2e}, {:.2e} of the largest logit {scale:.2}",
        err / scale
    );
        // NaN-aware: a NaN error fails the comparison
        assert!(
            err <= TOL * scale,
            "{name}: logits off the f64 reference by {err:e} (bound {:e})",
            TOL * scale
        );
    }
}

#[test]
fn tied_f32_checkpoint_matches_the_f64_reference() {
    // Qwen2.5's rope_theta
    check_against_reference("tied-f32", Shape::tiny(true, 1e6), StoreDtype::F32, 11);
}

#[test]
fn untied_bf16_checkpoint_matches_the_f64_reference() {
    check_against_reference("untied-bf16", Shape::tiny(false, 1e4), StoreDtype::Bf16, 12);
}

#[test]
fn tied_f16_checkpoint_matches_the_f64_reference() {
    check_against_reference("tied-f16", Shape::tiny(true, 1e4), StoreDtype::F16, 13);
}

/// The loader reads back exactly what the writer wrote: the same logits, bit for bit
/// (the loader is held to HF's layout by the tests above, so the writer is too).
#[test]
fn a_saved_model_loads_back_the_same() {
    let device = device();
    for tied in [true, false] {
        let config = Qwen2Config {
            tie_word_embeddings: tied,
            ..Qwen2Config::tiny()
        };
        let model = Qwen2::new(&config, &device).expect("model");
        let dir = scratch(&format!("roundtrip-{tied}"));
        save(&model, &dir, StoreDtype::F32).expect("save");
        let back = load(&dir, &device).expect("load");
        assert_eq!(back.config(), model.config());
        assert_eq!(back.num_params(), config.num_params());
        let tokens = token_tensor(&random_tokens(5, 2, 6, config.vocab_size), &device);
        let logits = |m: &Qwen2| values(m.logits(m.forward(tokens.clone())));
        assert_eq!(logits(&back), logits(&model), "tied = {tied}");
    }
}

/// Qwen2.5-0.5B's shape, counted without making its parameters.
#[test]
fn qwen2_5_0_5b_has_its_parameter_count() {
    let config = Qwen2Config::qwen2_5_0_5b();
    assert_eq!(config.num_params(), 494_032_768);
    let model = Qwen2::new(&config, &device()).expect("model");
    assert_eq!(model.num_params(), 494_032_768);
    assert_eq!(model.layers.len(), 24);
}
