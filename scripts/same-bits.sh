#!/usr/bin/env bash
# The outputs of two builds of the CLI compared byte for byte: the same `eval` runs
# (f32, bf16 and f16 logits; ten modes; parts, vocabulary shards, the rollout
# correction, the entropy and off-policy masks; the fused head) with each binary, on
# inputs written by same-bits/inputs.py (python3 with numpy).
#
#   scripts/same-bits.sh OLD_BINARY NEW_BINARY [DIR]
#
# Prints each run whose output files differ and exits 1 if any does.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2")
dir=${3:-target/same-bits}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir" && cd "$dir"
python3 "$here/same-bits/inputs.py"
runs() {
    local bin=$1 tag=$2 n=0
    run() {
        n=$((n + 1))
        "$bin" eval "$@" --output "$tag-$n.safetensors" >/dev/null 2>"$tag-$n.err" \
            || echo "$tag run $n failed: $*"
    }
    for f in f32 bf16 f16; do
        for mode in ppo_clip gspo cispo sapo clip_cov kl_cov dro vespo geo_mean dppo_tv; do
            extra=()
            [ "$mode" = dro ] && extra=(--dro-beta 0.3)
            run --input $f.safetensors --mode $mode ${extra[@]+"${extra[@]}"} \
                --kl-coef 0.05 --entropy-coeff 0.01 --temperature 0.8
        done
        run --input $f.safetensors --grad-dtype bf16 --parts 2 --rollout-is token
        run --input $f.safetensors --grad-dtype f16 --vocab-shards 3 \
            --loss-agg-mode seq-mean-token-sum
        run --input $f.safetensors --top-entropy-quantile 0.5 --off-policy-mask-threshold 0.1
    done
    run --input head.safetensors --grad-dtype bf16 --head-chunk 7 --kl-coef 0.05
    run --input head.safetensors --grad-dtype f32
    echo "$n"
}
total=$(runs "$old" old | tail -1)
runs "$new" new >/dev/null
bad=0
for i in $(seq 1 "$total"); do
    if ! cmp -s "old-$i.safetensors" "new-$i.safetensors"; then
        echo "run $i: the outputs differ"
        bad=1
    fi
done
echo "same-bits: $total runs, $([ $bad = 0 ] && echo 'every output byte-identical' || echo 'differences above')"
exit $bad
