//! The head's three products on every adapter against f64 sums, for every pair of
//! dtypes, at sizes that leave partial tiles in every direction.

use super::*;
use half::{bf16, f16};

fn bytes(dtype: DType, v: &[f32]) -> Vec<u8> {
    let mut out: Vec<u8> = match dtype {
        DType::F32 => bytemuck::cast_slice(v).to_vec(),
        DType::F16 => v
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect(),
        DType::Bf16 => v
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect(),
    };
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}

/// The values as the dtype holds them.
fn rounded(dtype: DType, v: &[f32]) -> Vec<f64> {
    v.iter()
        .map(|&x| match dtype {
            DType::F32 => x as f64,
            DType::F16 => f16::from_f32(x).to_f64(),
            DType::Bf16 => bf16::from_f32(x).to_f64(),
        })
        .collect()
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / 16777216.0 * 2.0 - 1.0
        })
        .collect()
}

/// Runs C = A·B (A m × k from `a` as `a_layout`, B k × n from `b`), returns C.
#[allow(clippy::type_complexity)]
fn run(
    ctx: &Context,
    (m, n, k): (u32, u32, u32),
    (ad, a, a_rc): (DType, &[f32], (u64, u64)),
    (bd, b, b_rc): (DType, &[f32], (u64, u64)),
) -> Vec<f32> {
    let ab = ctx.upload("a", &bytes(ad, a));
    let bb = ctx.upload("b", &bytes(bd, b));
    let c = ctx.upload("c", &vec![0u8; (m * n) as usize * 4]);
    let op = |arg, buffer, dtype, (row, col)| Operand {
        arg,
        buffer,
        dtype,
        offset: 0,
        row,
        col,
    };
    let mut encoder = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    let product = Product {
        m,
        n,
        k,
        a: op("a", &ab, ad, a_rc),
        b: op("b", &bb, bd, b_rc),
        c: &c,
        c_offset: 0,
        c_row: n as u64,
        accumulate: false,
    };
    record(ctx, &mut encoder, &product).unwrap();
    ctx.read_f32s(encoder, &[&c], (m * n) as usize)
        .unwrap()
        .remove(0)
}

#[test]
fn the_three_products_match_f64_sums_on_every_adapter() {
    let open = Context::open_all().unwrap();
    assert!(!open.contexts.is_empty(), "no adapter");
    // partial tiles only, in the pairs the head runs (A f32: hidden rows or Gz; B in
    // the weight's dtype) and one 16-bit pair; and interior tiles (unchecked loads)
    // beside partial ones
    let head_pairs: Vec<(DType, DType)> = DType::ALL
        .iter()
        .map(|&b| (DType::F32, b))
        .chain([(DType::Bf16, DType::F16)])
        .collect();
    for ((m, n, k), pairs) in [
        ((70u32, 130u32, 37u32), head_pairs),
        ((200, 300, 45), vec![(DType::F32, DType::Bf16)]),
    ] {
        for ctx in &open.contexts {
            for &(ad, bd) in &pairs {
                {
                    let a = values((m * k) as usize, 1);
                    let b = values((k * n) as usize, 2);
                    let (ar, br) = (rounded(ad, &a), rounded(bd, &b));
                    // A row-major (k contiguous) as h; A transposed (m contiguous) as Gzᵀ;
                    // B as Wᵀ (k contiguous) and as W (n contiguous)
                    for (a_rc, b_rc) in [
                        ((k as u64, 1), (1, k as u64)),
                        ((k as u64, 1), (n as u64, 1)),
                        ((1, m as u64), (n as u64, 1)),
                    ] {
                        let got = run(ctx, (m, n, k), (ad, &a, a_rc), (bd, &b, b_rc));
                        let again = run(ctx, (m, n, k), (ad, &a, a_rc), (bd, &b, b_rc));
                        assert_eq!(
                            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            again.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            "{}: not reproducible",
                            ctx.describe()
                        );
                        for i in 0..m as u64 {
                            for j in 0..n as u64 {
                                let (mut sum, mut mag) = (0.0f64, 0.0f64);
                                for kk in 0..k as u64 {
                                    let x = ar[(i * a_rc.0 + kk * a_rc.1) as usize];
                                    let y = br[(kk * b_rc.0 + j * b_rc.1) as usize];
                                    sum += x * y;
                                    mag += (x * y).abs();
                                }
                                let g = got[(i * n as u64 + j) as usize] as f64;
                                assert!(
                                    (g - sum).abs() <= 1e-6 * mag + 1e-30,
                                    "{} {ad}×{bd} {a_rc:?} {b_rc:?} ({i}, {j}): {g} vs {sum}",
                                    ctx.describe()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
