#!/usr/bin/env bash
# The GPU cost of the row kernels without a GPU: every row-kernel pipeline compiled to
# real AMD GPU ISA by Mesa's RADV on its null device (no hardware needed), and a table
# of VGPRs, waves per SIMD and instructions per logit in each sweep's loops.
#
#   scripts/gpu-isa.sh [FAMILY] [--match REGEX] [--unchecked] [--keep DIR]
#
# FAMILY is RADV's (gfx1100 = RDNA3, the default; navi21 = RDNA2, ...). --match picks
# variants by name (default: the row kernels on the path a modern GPU takes,
# f16+subgroups, strided lanes). --unchecked compiles what wgpu gives for
# ShaderRuntimeChecks::unchecked() (no index clamps, no loop counters). The SPIR-V is
# what wgpu's Vulkan back end hands a driver (examples/spirv.rs). The driver's full
# output (ISA, statistics) stays in target/gpu-isa/ for reading.
#
# Installs what it needs on Debian as root, as test.sh does: Mesa's Vulkan drivers
# (RADV), the Vulkan loader and headers, a C compiler.
set -euo pipefail
cd "$(dirname "$0")/.."

family=gfx1100
match='^[0-9]+	(RowStats|RowPartials|KeptPartials|KeptSelect|PolicyLoss)/[^	]*/f16\+subgroups/[^	]*/strided	'
checks=()
out=target/gpu-isa
while [ $# -gt 0 ]; do
    case "$1" in
        --match) match=$2; shift 2 ;;
        --unchecked) checks=(--unchecked); shift ;;
        --keep) out=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) family=$1; shift ;;
    esac
done

# The checks hold under `set -euo pipefail`: compgen for a glob that may match nothing,
# and the loader's list in a variable (a `grep -q` on a pipe exits at the first match,
# and its writer's SIGPIPE would fail the pipe).
need=()
libs=$(ldconfig -p 2>/dev/null || true)
[ -f /usr/include/vulkan/vulkan.h ] || need+=(libvulkan-dev)
compgen -G '/usr/share/vulkan/icd.d/radeon_icd.*.json' >/dev/null || need+=(mesa-vulkan-drivers)
[[ $libs == *libvulkan.so.1* ]] || need+=(libvulkan1)
command -v cc >/dev/null || need+=(gcc)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "gpu-isa: installing ${need[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "gpu-isa: needs ${need[*]} (Debian packages)" >&2
        exit 2
    fi
fi

rm -rf "$out"
mkdir -p "$out/spv"
cargo run --quiet --release --example spirv -- "$out/spv" ${checks[@]+"${checks[@]}"}
grep -E "$match" "$out/spv/manifest.tsv" >"$out/manifest.tsv" || {
    echo "gpu-isa: no variant matches $match" >&2
    exit 1
}
cc -O1 -o "$out/radv_compile" scripts/gpu-isa/radv_compile.c -lvulkan
mapfile -t args < <(awk -F'\t' '{print $1; print $4; print $3}' "$out/manifest.tsv")
RADV_FORCE_FAMILY=$family RADV_DEBUG=shaders,shaderstats,nocache \
    "$out/radv_compile" "${args[@]}" 2>"$out/driver.txt" >/dev/null || {
    tail -5 "$out/driver.txt" >&2
    exit 1
}
device=$(sed -n 's/^### DEVICE //p' "$out/driver.txt")
echo "RDNA instructions per logit in each sweep's loops on $device" \
    "(${checks[*]:-checked} modules; s_waitcnt, s_nop, s_delay_alu not counted):"
echo
python3 scripts/gpu-isa/count.py "$out/manifest.tsv" "$out/driver.txt" --json "$out/table.json" |
    sed 's#/f16+subgroups/#/#; s#/strided |# |#' | tee "$out/table.md"
