#!/usr/bin/env bash
# Builds the demo page (web/www): the library and web/src compiled for
# wasm32-unknown-unknown, and wasm-bindgen's JavaScript glue into web/www/pkg. No
# JavaScript bundler: the page imports the glue as an ES module. Then
#
#   python3 -m http.server -d web/www 8000      # and open http://localhost:8000/
#
# WebGPU needs a browser that has it (Chrome/Edge; Chromium on Linux with
# --enable-unsafe-webgpu) and a secure context (localhost is one).
set -euo pipefail
cd "$(dirname "$0")/.."

# the CLI must be the version of the wasm-bindgen crate (web/Cargo.toml pins it)
WASM_BINDGEN_VERSION=0.2.130
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
    echo "web-build: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)" >&2
    cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
cargo build -q -p wgpu-policy-loss-web --target wasm32-unknown-unknown --release
wasm-bindgen --target web --no-typescript --out-dir web/www/pkg \
    target/wasm32-unknown-unknown/release/wgpu_policy_loss_web.wasm
echo "web-build: web/www is ready; serve it with: python3 -m http.server -d web/www 8000"
