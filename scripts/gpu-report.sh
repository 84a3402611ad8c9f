#!/usr/bin/env bash
# One command for a GPU report: the test suite, `check`, `bench --large` (the main table
# and the stages), `info` and, where python3 has torch, benches/anchors.py (PyTorch
# eager, torch.compile, Liger where installed) on every adapter of this machine,
# written to one folder with a short summary (summary.md) and packed as a .tar.gz.
#
#   scripts/gpu-report.sh [--out DIR]                  from a clone: builds in release
#   scripts/gpu-report.sh --pack DIR                   builds, and packs the binaries
#                                                      and this script into DIR (and
#                                                      DIR.tar.gz) for a machine
#                                                      without a Rust toolchain
#   DIR/gpu-report.sh --bin-dir DIR [--out DIR2]       there: runs the prebuilt binaries
#
# Every test executable runs with its ignored tests (the ones for real GPUs); the summary
# lists each ignored test with what it compared, and fails one that compared nothing.
# Extra environment: REPORT_BENCH_SECONDS (time budget of one measurement, default 2),
# REPORT_TESTS (only these test executables, e.g. "cli prepare"; default all),
# REPORT_LARGE=0 (bench without the long-context shape, 16384 x 151936 bf16),
# WGPU_POLICY_LOSS_STRICT=1 (an adapter that refuses a device fails the run instead of
# being reported and skipped), WGPU_BACKEND / WGPU_ADAPTER_NAME as everywhere.
set -uo pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

out="gpu-report-$(date -u +%Y%m%dT%H%M%SZ)"
bin_dir=""
pack=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --bin-dir) bin_dir="$2"; shift 2 ;;
        --pack) pack="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "gpu-report: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done

# Builds the CLI and every test executable in release and copies them to $1.
build_bundle() {
    local dest="$1" root
    root="$(cd "$(dirname "$0")/.." && pwd)"
    command -v cargo >/dev/null || { echo "gpu-report: no cargo here; build elsewhere with --pack, then run with --bin-dir" >&2; exit 2; }
    mkdir -p "$dest/bin" "$dest/tests"
    # one build for the CLI and the test executables, the one `cargo test --release`
    # makes: a lone `cargo build --bin` would resolve the features without the
    # dev-dependencies' and rebuild naga, wgpu and the crate. Paths from cargo's own
    # report (CARGO_TARGET_DIR or target/)
    local report cli exes
    report=$(cd "$root" && cargo test --release --no-run --message-format=json 2>/dev/null)
    cli=$(grep '"kind":\["bin"\]' <<<"$report" | grep '"name":"wgpu-policy-loss"' |
        grep '"profile":{[^}]*"test":false' |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -n "$cli" ] && [ -x "$cli" ] || { echo "gpu-report: cargo did not build the CLI" >&2; exit 1; }
    cp "$cli" "$dest/bin/"
    # each test target's executable, by the name of its file (tests/cli.rs -> cli)
    exes=$(grep '"profile":{[^}]*"test":true' <<<"$report" |
        sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/p')
    [ -n "$exes" ] || { echo "gpu-report: cargo test --no-run built nothing" >&2; exit 1; }
    while read -r name exe; do
        cp "$exe" "$dest/tests/$name"
    done <<<"$exes"
    # symbols off: the bundle travels (a lent machine takes 64 MiB a call)
    if command -v strip >/dev/null; then strip "$dest"/bin/* "$dest"/tests/*; fi
    cp "$root/scripts/gpu-report.sh" "$root/benches/anchors.py" "$dest/"
    (cd "$root" && git rev-parse HEAD 2>/dev/null) >"$dest/COMMIT" || true
}

if [ -n "$pack" ]; then
    rm -rf "$pack"
    build_bundle "$pack"
    tar -czf "$pack.tar.gz" -C "$(dirname "$pack")" "$(basename "$pack")"
    echo "gpu-report: packed $(ls "$pack/tests" | wc -l) test executables and the CLI into $pack and $pack.tar.gz"
    echo "on the GPU machine: tar xzf $(basename "$pack").tar.gz && $(basename "$pack")/gpu-report.sh --bin-dir $(basename "$pack")"
    exit 0
fi

if [ -z "$bin_dir" ]; then
    bin_dir="$(mktemp -d)/bundle"
    build_bundle "$bin_dir"
fi
bin_dir="$(cd "$bin_dir" && pwd)"
cli="$bin_dir/bin/wgpu-policy-loss"
[ -x "$cli" ] || { echo "gpu-report: $cli is missing (a bundle from --pack?)" >&2; exit 2; }
mkdir -p "$out/tests"
out="$(cd "$out" && pwd)"
seconds="${REPORT_BENCH_SECONDS:-2}"
# the cli tests run the bundle's binary, not the build tree's
export WGPU_POLICY_LOSS_BIN="$cli"

if [ "$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    echo "gpu-report: warning: no Vulkan loader (libvulkan.so.1) found; install libvulkan1, or only GL adapters can be found" | tee "$out/warnings.txt" >&2
fi

step() { # name, then the command; its output to $out/name.txt, its exit code kept
    local name="$1"; shift
    echo "gpu-report: $name ..." >&2
    local t0=$SECONDS
    "$@" >"$out/$name.txt" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" >>"$out/steps.txt"
    return $rc
}

: >"$out/steps.txt"
step info "$cli" info
info_rc=$?

tests_failed=0
for t in "$bin_dir"/tests/*; do
    name="$(basename "$t")"
    if [ -n "${REPORT_TESTS:-}" ] && ! [[ " ${REPORT_TESTS//,/ } " == *" $name "* ]]; then
        continue
    fi
    # the ignored tests are the ones for real GPUs (logits above 2 GiB): listed first,
    # so that the summary can say what each of them compared
    "$t" --list --ignored 2>/dev/null | sed -n 's/: test$//p' >"$out/tests/$name.ignored"
    step "tests/$name" "$t" --include-ignored
    rc=$?
    [ $rc -eq 0 ] || tests_failed=$((tests_failed + 1))
done

# Each ignored test that ran, with its result and what it compared: the tests print
# "COMPARED <test>: <n> <what> on <adapter>" (tests/common/tally.rs). One that passed
# without such a line compared nothing, and counts as a failure (a failed one counted
# already, with its executable).
ignored_failed=0
ignored_empty=0
: >"$out/ignored.md"
for list in "$out"/tests/*.ignored; do
    [ -e "$list" ] || continue
    exe="$(basename "$list" .ignored)"
    log="$out/tests/$exe.txt"
    while IFS= read -r test; do
        [ -n "$test" ] || continue
        line=$(grep -F "test $test ... " "$log" | tail -1)
        result="${line##* ... }"
        compared=$(awk -v p="COMPARED $test: " 'index($0, p) == 1 { print "  - compared " substr($0, length(p) + 1) }' "$log")
        skipped=$(awk -v p="SKIPPED $test" 'index($0, p " ") == 1 || index($0, p ":") == 1 { print "  - skipped" substr($0, length(p) + 1) }' "$log")
        case "$result" in
            ok) if [ -n "$compared" ]; then verdict="ok"; else
                    verdict="FAIL (passed, but printed no COMPARED line: it compared nothing)"
                    ignored_empty=$((ignored_empty + 1))
                fi ;;
            FAILED*) verdict="FAIL: $(grep -F -A1 "thread '$test'" "$log" | grep -v "^thread '" | head -1)" ;;
            *) verdict="FAIL (no result line: the executable did not finish it)" ;;
        esac
        [ "$verdict" = ok ] || ignored_failed=$((ignored_failed + 1))
        {
            echo "- $exe $test: $verdict"
            [ -z "$compared" ] || echo "$compared"
            [ -z "$skipped" ] || echo "$skipped"
        } >>"$out/ignored.md"
    done <"$list"
done
tests_failed=$((tests_failed + ignored_empty))

step check "$cli" check
check_rc=$?
large=$([ "${REPORT_LARGE:-1}" = 0 ] || echo --large)
# --quiet: the report keeps the tables, not the progress lines bench writes to stderr
step bench "$cli" bench $large --quiet --seconds "$seconds" --json-file "$out/bench.json"
bench_rc=$?
step stages "$cli" bench --stages $large --quiet --seconds "$seconds" --json-file "$out/stages.json"
stages_rc=$?
# PyTorch beside the bench, where there is a PyTorch (its rows say why they did not run)
anchors="n/a (no python3 with torch)"
if python3 -c 'import torch' 2>/dev/null; then
    # the long-context shape only where torch has a GPU (10 GB through a CPU: minutes)
    big=$(python3 -c 'import torch; print("--large" if torch.cuda.is_available() else "")')
    [ "${REPORT_LARGE:-1}" = 0 ] && big=""
    step anchors python3 "$bin_dir/anchors.py" $big
    anchors=$([ $? -eq 0 ] && echo pass || echo FAIL)
fi

verdict() { [ "$1" -eq 0 ] && echo pass || echo "FAIL (exit $1)"; }
{
    echo "# wgpu-policy-loss GPU report"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(uname -srm)"
    [ -f "$bin_dir/COMMIT" ] && echo "- commit: $(cat "$bin_dir/COMMIT")"
    command -v nvidia-smi >/dev/null &&
        echo "- nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
    echo
    echo "## Adapters (info: $(verdict $info_rc))"
    echo
    echo '```'
    grep -E '^adapter |^  backend:|^  device:|^  subgroups:|^  max (storage|buffer)' "$out/info.txt"
    echo '```'
    echo
    echo "## Tests: $([ $tests_failed -eq 0 ] && echo pass || echo "FAIL ($tests_failed executables or ignored tests)")"
    echo
    for f in "$out"/tests/*.txt; do
        name="$(basename "$f" .txt)"
        result="$(grep -h '^test result:' "$f" | tail -1)"
        empty=$(grep -F -e "- $name " "$out/ignored.md" | grep -c 'compared nothing')
        note=$([ "$empty" -eq 0 ] || echo " (but $empty ignored test(s) compared nothing: FAIL)")
        echo "- $name: ${result:-no result line (see tests/$name.txt)}$note"
    done
    grep -h '^SKIPPED adapter' "$out"/tests/*.txt | sort -u | sed 's/^/- /'
    echo
    echo "### Ignored tests run (the ones for real GPUs): $([ $ignored_failed -eq 0 ] && echo pass || echo "FAIL ($ignored_failed, of which $ignored_empty passed comparing nothing)")"
    echo
    if [ -s "$out/ignored.md" ]; then cat "$out/ignored.md"; else echo "none in the executables run"; fi
    echo
    echo "### What the tests that count their comparisons compared, and skipped"
    echo
    echo '```'
    grep -h -E '^(COMPARED|SKIPPED) ' "$out"/tests/*.txt | grep -v '^SKIPPED adapter' || echo "(no such test among those run)"
    echo '```'
    echo
    echo "## check: $(verdict $check_rc)"
    echo
    echo '```'
    grep -v 'XDG_RUNTIME_DIR' "$out/check.txt"
    echo '```'
    echo
    echo "## bench $large: $(verdict $bench_rc)"
    echo
    echo '```'
    grep -v 'XDG_RUNTIME_DIR' "$out/bench.txt"
    echo '```'
    echo
    echo "## bench --stages $large: $(verdict $stages_rc)"
    echo
    echo '```'
    grep -v 'XDG_RUNTIME_DIR' "$out/stages.txt"
    echo '```'
    echo
    echo "## PyTorch anchors (benches/anchors.py): $anchors"
    echo
    [ -f "$out/anchors.txt" ] && { echo '```'; grep -E '^(eager|compile|liger) ' "$out/anchors.txt"; echo '```'; echo; }
    echo "Every step's full output is beside this file; steps.txt has exit codes and times."
} >"$out/summary.md"

tar -czf "$out.tar.gz" -C "$(dirname "$out")" "$(basename "$out")"
cat "$out/summary.md"
echo "gpu-report: written to $out and $out.tar.gz" >&2
[ $info_rc -eq 0 ] && [ $tests_failed -eq 0 ] && [ $check_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $stages_rc -eq 0 ]
