// Read-only logits for logits/packed.wgsl.
@group(0) @binding(0) var<storage, read> logits: array<u32>;
