// Read-only logits for logits/f16.wgsl.
@group(0) @binding(0) var<storage, read> logits: array<f16>;
