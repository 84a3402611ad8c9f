// The roofline's copy kernel: 16 bytes per invocation, the simplest way to move bytes
// through the shader cores (compare with the buffer-to-buffer copy of the same bytes).
//
// requires: CopyParams, WG_SIZE

// CopyParams, the uniform block: declared in src/shader/abi/baseline.rs

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG_SIZE)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG_SIZE;
    if (i < params.count) {
        dst[i] = src[i];
    }
}
