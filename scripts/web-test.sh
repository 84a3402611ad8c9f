#!/usr/bin/env bash
# The library in a real browser: the wasm-bindgen-test suite (web/tests/browser.rs) in
# headless Chromium on its WebGPU adapter (SwiftShader on a machine without a GPU),
# then the demo page (web/www) loaded in headless Chromium, the demo run to the end and
# the check clicked, asserting from the page's own output that the reward rose past
# 0.9 and every check passed (web/page-test.mjs); the screenshot goes to
# target/web-demo.png.
#
# Installs what it needs on a fresh Debian as root: chromium and chromium-driver
# (apt-get), the wasm32 target (rustup), wasm-bindgen-cli (cargo install, once),
# playwright-core (npm, into web/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

now() { date +%s; }
t0=$(now)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "web-test: installing chromium and chromium-driver" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    else
        echo "web-test: needs chromium and chromedriver (Debian: chromium chromium-driver)" >&2
        exit 2
    fi
fi
# the target, wasm-bindgen-cli and the page, as the page's build script makes them
./scripts/web-build.sh

# the suite: cargo runs each test binary through wasm-bindgen-test-runner, which drives
# Chromium through chromedriver with web/webdriver.json's flags (WebGPU on)
(
    cd web
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
        CHROMEDRIVER="$(command -v chromedriver)" WASM_BINDGEN_TEST_TIMEOUT=900 \
        cargo test --target wasm32-unknown-unknown --release --test browser -- --nocapture
)
echo "web-test: the browser suite passed in $(($(now) - t0)) s"

# the page, served on localhost (a secure context, as WebGPU requires)
t1=$(now)
(cd web && npm install --no-audit --no-fund --silent)
port=8734
python3 -m http.server -d web/www "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 1
mkdir -p target
node web/page-test.mjs "http://localhost:$port/" target/web-demo.png
echo "web-test: the demo page passed in $(($(now) - t1)) s (screenshot: target/web-demo.png)"
