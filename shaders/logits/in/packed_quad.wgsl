// Read-only logits for logits/packed_quad.wgsl.
@group(0) @binding(0) var<storage, read> logits: array<vec4<u32>>;
