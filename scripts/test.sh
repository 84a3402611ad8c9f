#!/usr/bin/env bash
# The test command. Runs the whole suite on every GPU adapter of this machine, each
# against the f64 CPU reference.
#
# On Linux without a Vulkan driver or EGL (a fresh Debian, CI without a GPU) it first
# installs Mesa's software drivers -- lavapipe (Vulkan) and llvmpipe (GL via EGL) --
# which needs root and apt-get. On a machine with a GPU driver nothing is installed;
# plain `cargo test --release` works there too. Extra arguments go to `cargo test`.
#
# The suite is built in release: the f64 reference, naga's translation of every shader
# variant and the CLI the tests spawn run many times faster optimised; the crate keeps
# overflow checks and debug assertions in that profile (Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

# Both checks must hold under `set -euo pipefail`: no `ls` of a glob that may match
# nothing (ls exits 2), and no `grep -q` reading a pipe (it exits at the first match
# and its writer dies of SIGPIPE, which pipefail reports as a failure).
have_lib() { # the dynamic loader knows this library
    local libs
    libs=$(ldconfig -p 2>/dev/null || true)
    [[ $libs == *"$1"* ]]
}
have_file() { # at least one of the globs matches an existing file
    local pattern
    for pattern in "$@"; do
        if compgen -G "$pattern" >/dev/null; then return 0; fi
    done
    return 1
}
have_vulkan() {
    have_lib libvulkan.so.1 && have_file '/usr/share/vulkan/icd.d/*.json' '/etc/vulkan/icd.d/*.json'
}
have_egl() {
    have_lib libEGL.so.1 && have_file '/usr/lib/*/libEGL_mesa.so.0' '/usr/lib/libEGL_mesa.so.0'
}

if [ "$(uname -s)" = Linux ] && ! { have_vulkan && have_egl; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: no Vulkan/EGL driver found; installing Mesa's lavapipe and llvmpipe" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
    else
        echo "test.sh: no Vulkan/EGL driver found and cannot install one (needs root and apt-get);" \
            "the GPU tests will fail with 'no GPU adapter found'" >&2
    fi
fi

exec cargo test --release "$@"
