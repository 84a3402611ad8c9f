//! Every pipeline variant the crate can build: the tooling's list (naga's portability
//! test, `scripts/gpu-isa.sh`), kept apart from how one variant is built.

use super::{GradOut, Kernel, Paths, PipelineKey, SamplerMap};
use crate::view::DType;

/// Every distinct shader the crate can build, with the paths it needs: what the
/// portability test feeds to naga's back ends.
pub fn shader_variants() -> Vec<(String, PipelineKey)> {
    let all_paths = [
        Paths::FALLBACK,
        Paths {
            shader_f16: true,
            subgroups: false,
        },
        Paths {
            shader_f16: false,
            subgroups: true,
        },
        Paths {
            shader_f16: true,
            subgroups: true,
        },
    ];
    let mut out: Vec<(String, PipelineKey)> = Vec::new();
    let mut push = |key: PipelineKey| {
        let name = key.name();
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, key));
        }
    };
    for paths in all_paths {
        for kernel in Kernel::ALL {
            if !kernel.reads_logits() {
                let small = PipelineKey::small(kernel, paths);
                push(small);
                if matches!(kernel, Kernel::Matmul { .. }) {
                    push(small.with_lane_blocks(true));
                }
                continue;
            }
            for logits in DType::ALL {
                let grads: Vec<GradOut> = if kernel == Kernel::PolicyLoss {
                    [GradOut::None, GradOut::InPlace]
                        .into_iter()
                        .chain(DType::ALL.map(GradOut::Separate))
                        .collect()
                } else {
                    vec![GradOut::None]
                };
                for grad in grads {
                    // every alignment of logits and gradient, on both lane layouts (the
                    // names merge what builds the same module)
                    // with each sampler's map where the kernel takes one
                    let maps = SamplerMap::of_kernel(kernel);
                    for (i, &sampler) in (0..8u8).flat_map(|i| maps.iter().map(move |m| (i, m))) {
                        let (quad, grad_quad, lane_blocks) = (i & 1 != 0, i & 2 != 0, i & 4 != 0);
                        push(PipelineKey {
                            kernel,
                            logits,
                            grad,
                            paths,
                            quad,
                            grad_quad,
                            lane_blocks,
                            sampler,
                        });
                    }
                }
            }
        }
    }
    out
}
