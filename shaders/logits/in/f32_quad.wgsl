// Read-only logits for logits/f32_quad.wgsl.
@group(0) @binding(0) var<storage, read> logits: array<vec4<f32>>;
