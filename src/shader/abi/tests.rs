//! The generated WGSL declarations against Rust's layout: naga lays out every struct
//! of every module as WGSL's rules say, and each must have Rust's offsets and size;
//! every constant must read back with Rust's value.

use super::Decl;
use crate::shader::variants::shader_variants;

fn parse(name: &str, src: &str) -> naga::Module {
    naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)))
}

fn check_struct(
    module: &naga::Module,
    variant: &str,
    name: &str,
    fields: &[super::Field],
    size: usize,
) {
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{variant}: struct {name} is not in the module"));
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{variant}: {name} is not a struct");
    };
    assert_eq!(*span as usize, size, "{variant}: size of {name}");
    assert_eq!(members.len(), fields.len(), "{variant}: members of {name}");
    for (m, f) in members.iter().zip(fields) {
        assert_eq!(m.name.as_deref(), Some(f.name), "{variant}: {name}");
        assert_eq!(
            m.offset as usize, f.offset,
            "{variant}: offset of {name}.{}",
            f.name
        );
    }
}

fn check_const(module: &naga::Module, variant: &str, name: &str, value: f64) {
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{variant}: const {name} is not in the module"));
    let got = match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v as f64,
        naga::Expression::Literal(naga::Literal::I32(v)) => v as f64,
        naga::Expression::Literal(naga::Literal::F32(v)) => v as f64,
        ref e => panic!("{variant}: const {name} is {e:?}"),
    };
    assert_eq!(got.to_bits(), value.to_bits(), "{variant}: const {name}");
}

#[test]
fn generated_declarations_have_rusts_layout() {
    for (variant, key) in shader_variants() {
        let mut checked = 0;
        let module = parse(&variant, &key.source());
        for decl in key.kernel.abi().iter().flat_map(|d| d.iter()) {
            match *decl {
                Decl::Struct { name, fields, size } => {
                    check_struct(&module, &variant, name, fields, size)
                }
                Decl::Const { name, value, .. } => check_const(&module, &variant, name, value),
            }
            checked += 1;
        }
        assert!(
            checked >= super::COMMON.len(),
            "{variant}: {checked} declarations"
        );
    }
}

/// Why the uniform blocks carry `_padN` members: in a WGSL uniform a struct member,
/// and the member after it, start on a multiple of 16 bytes, where Rust's `repr(C)`
/// packs them. naga's validator (run on every variant by tests/shaders.rs) rejects the
/// unpadded block, and the padded one has the same layout on both sides.
#[test]
fn an_unpadded_uniform_is_rejected() {
    super::wgsl_struct! {
        #[derive(Clone, Copy)]
        struct Inner { a: u32, b: u32 }
        #[derive(Clone, Copy)]
        struct Unpadded { x: u32, inner: Inner, y: u32 }
        #[derive(Clone, Copy)]
        struct Inner16 { a: u32, b: u32, _pad0: u32, _pad1: u32 }
        #[derive(Clone, Copy)]
        struct Padded { x: u32, _pad0: u32, _pad1: u32, _pad2: u32, inner: Inner16, y: u32 }
    }
    let validate = |name: &str, decl: &[Decl]| {
        let src = super::wgsl(&[&[Inner::DECL, Inner16::DECL], decl])
            + &format!(
                "@group(0) @binding(0) var<uniform> p: {name};\n\
                 @compute @workgroup_size(1) fn main() {{ _ = p.y; }}\n"
            );
        let module = parse(name, &src);
        let Decl::Struct { fields, size, .. } = decl[0] else {
            unreachable!()
        };
        check_struct(&module, name, name, fields, size);
        let result =
            naga::valid::Validator::new(Default::default(), Default::default()).validate(&module);
        if let Err(e) = &result {
            eprintln!("{name}: {}", e.emit_to_string(&src));
        }
        result.is_ok()
    };
    assert!(!validate("Unpadded", &[Unpadded::DECL]));
    assert!(validate("Padded", &[Padded::DECL]));
}
