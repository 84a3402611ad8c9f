#!/usr/bin/env bash
# The MPI example (examples/mpi-shards): a vocabulary-sharded policy loss over 2 and
# then 3 MPI ranks, one wgpu device each, exchanging partial row statistics with an
# all-gather; each rank checks itself against the unsharded reference.
#
#   scripts/mpi-example.sh
#
# Needs Open MPI (mpirun, mpicc and mpi.h) and libclang (rsmpi generates its bindings
# with bindgen); as root on a Debian/Ubuntu machine, installs
# `libopenmpi-dev openmpi-bin libclang-dev` when any is missing. Runs with
# --oversubscribe (3 ranks on a 2-core machine) and, as root, --allow-run-as-root.
set -euo pipefail
cd "$(dirname "$0")/.."

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

have_mpi() {
    command -v mpirun >/dev/null && command -v mpicc >/dev/null &&
        echo '#include <mpi.h>' | mpicc -E -x c - >/dev/null 2>&1
}
have_libclang() {
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'
}

if ! have_mpi || ! have_libclang; then
    if [ "$(uname -s)" = Linux ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "mpi-example: installing Open MPI and libclang"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends libopenmpi-dev openmpi-bin libclang-dev >/dev/null
    else
        echo "mpi-example: needs Open MPI (mpirun, mpicc, mpi.h) and libclang; install" \
            "libopenmpi-dev openmpi-bin libclang-dev (Debian/Ubuntu) or your system's" \
            "equivalents, or run this as root on a machine with apt-get" >&2
        exit 2
    fi
fi

flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
# wgpu's GL backend (Mesa's EGL, listed beside Vulkan) complains on every rank
# without one
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
    trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT
fi

t=$(now)
cargo build --release -p mpi-shards
echo "mpi-example: build took $(since "$t")"

for n in 2 3; do
    echo "mpi-example: mpirun -n $n"
    t=$(now)
    mpirun "${flags[@]}" -n "$n" target/release/mpi-shards
    echo "mpi-example: $n ranks took $(since "$t")"
done
