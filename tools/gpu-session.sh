#!/usr/bin/env bash
# What issue 10 needs measured on a lent NVIDIA GPU, in ONE device call. A session has 15 minutes
# of device time (the machine's start included), a call at most 10, and at most 8 files come back
# from $OUT, so the steps run by priority inside one budget:
#   1. the kernel tests on the card: every GPU kernel against its CPU reference, the
#      cooperative-matrix (tensor-core) kernels on 16×16 fragments included, then the tiny
#      models' goldens as whole graphs, then the full-size UNet and TE-3DVAE on the tensor
#      cores against their exact f32 paths (correct first);
#   2. the side-by-side table (tools/side-by-side.sh): the engine and the official PyTorch code on
#      the same models and shapes, then the kernels;
#   3. per-kernel profiles of the UNet window call and the job's TE-3DVAE decode at a 128² latent,
#      and the full-size text encoder once;
#   4. the whole job beside the official pipeline (side-by-side's PART=job), if enough is left;
#   5. a tiled job, rectangles against squares (side-by-side's PART=tiles), with what is left.
# Every step runs under `timeout` within RUN_BUDGET (default 560 s, for a call's timeout_s 600;
# where the device tool offers less, set it to that limit less 40).
# Logs stay in /tmp/gpu-session and are packed into $OUT/session.tar.gz after every step, so a
# call cut short still brings back what ran; $OUT also gets summary.txt (printed last),
# table.md and BENCHMARKS.json.
#
#   here:  tools/gpu-session.sh build   release binaries, the job's clip, the official code and
#                                       the wheels (DIFFVSR_REPO=/path/to/clone), the Vulkan loader
#   there: tools/gpu-session.sh run     one device call: carry .device-bin .gl .whl, timeout_s 600
#   here:  tools/gpu-session.sh tiny    the same steps on lavapipe and PyTorch on the CPU, with the
#                                       tiny test models (PYTHON, DIFFVSR_REPO as side-by-side.sh
#                                       tiny): a smoke test of the script, its numbers mean nothing
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
mode=${1:-run}

case "$mode" in
build)
    set -e
    if ! ls .gl/*.deb >/dev/null 2>&1; then
        # The Vulkan loader and glvnd for the card machine, which has neither (device README).
        mkdir -p .gl /tmp/amd64/partial
        o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
        # shellcheck disable=SC2086
        apt-get $o update -qq
        # shellcheck disable=SC2086
        (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    bash tools/gpu-check.sh build
    bash tools/side-by-side.sh build
    . tools/device-files.sh
    check_travel_size .device-bin .gl .whl
    echo "carry .device-bin .gl .whl; run: tools/gpu-session.sh run, timeout_s 600"
    exit 0
    ;;
run | tiny) ;;
*)
    echo "usage: tools/gpu-session.sh build|run|tiny" >&2
    exit 2
    ;;
esac

out=${OUT:-./gpu-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${SESSION_DIR:-/tmp/gpu-session}
rm -rf "$work"
mkdir -p "$work"
budget=${RUN_BUDGET:-560}
start=$SECONDS

# Seconds a step may take: its own limit, cut to what the budget leaves after `reserve` seconds
# kept for the steps after it (0: skip the step; never pass 0 to `timeout`, which means no limit).
left() {
    local want=$1 rem=$((budget - (SECONDS - start) - ${2:-0}))
    if [ "$rem" -lt 15 ]; then echo 0; elif [ "$want" -gt "$rem" ]; then echo "$rem"; else echo "$want"; fi
}

note() {
    echo "$*" | tee -a "$work/summary.txt"
}

# Everything so far into $OUT: the archive (replaced whole, never half-written) and the summary.
# (tar exits 1 where a file changed as it read it: the background packer of step 2 meets logs
# being written.)
pack() {
    local part="$out/session.tar.gz.${1:-part}"
    tar -czf "$part" -C "$work" . 2>/dev/null
    [ $? -le 1 ] && mv "$part" "$out/session.tar.gz"
    cp "$work/summary.txt" "$out/summary.txt"
    for f in table.md BENCHMARKS.json; do
        [ -f "$work/side-by-side/$f" ] && cp "$work/side-by-side/$f" "$out/$f"
    done
}

if [ "$mode" = run ]; then
    BIN=${BIN:-$ROOT/.device-bin/diffvsr-wgpu}
    TESTS=${TESTS:-$ROOT/.device-bin/kernel-tests}
    . tools/device-env.sh
    # The card's cooperative kernels run on 16×16 fragments: with this set, a card where they
    # would all skip fails ops::tests::cooperative_kernels_run_here.
    export DIFFVSR_EXPECT_COOP=16
    profile_unet="--random-inputs 2x128x128"
    profile_vae="--random-inputs 1x128x128"
    check_unet="--random-inputs 2x64x64"
    check_vae="--random-inputs 1x32x32"
else
    BIN=${BIN:-$ROOT/target/release/diffvsr-wgpu}
    [ -x "$BIN" ] || BIN=$ROOT/target/debug/diffvsr-wgpu
    TESTS=${TESTS:-}
    profile_unet="--config tests/data/diffvsr_unet/config.json --random-inputs 2x8x12"
    profile_vae="--config tests/data/te3dvae/config.json --random-inputs 1x8x12"
    # (The tiny UNet's deepest level is one pixel at an 8×8 latent, where its per-frame
    # GroupNorms of one or two channels amplify f16 rounding: 16×16 keeps it well conditioned.)
    check_unet="--config tests/data/diffvsr_unet/config.json --random-inputs 2x16x16"
    check_vae="--config tests/data/te3dvae/config.json --random-inputs 1x8x12"
fi
export BIN
export RUST_LOG=${RUST_LOG:-warn,wgpu_hal=off}
# Tuned tiles (the default on a GPU) are shared by every step and come back in the archive.
export DIFFVSR_TUNE_CACHE=${DIFFVSR_TUNE_CACHE:-$work/tuning}

{
    echo "gpu-session $mode, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(if [ "$mode" = run ]; then cat .device-bin/commit; else echo "$(git rev-parse --short HEAD) (the checkout's; BIN may be older)"; fi 2>/dev/null)"
    timeout -k 5 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed -n 1,2p
    timeout -k 5 30 "$BIN" devices 2>&1 | sed -n 1,20p
} >"$work/summary.txt"
cat "$work/summary.txt"
pack

# 1. The kernel tests (not in tiny mode: CI runs them on lavapipe).
t=$(left "${TEST_TIMEOUT:-120}" 330)
if [ -n "$TESTS" ] && [ "$t" -gt 0 ]; then
    note "== 1. kernel tests (limit ${t}s)"
    # The CPU-only modules (parsers, fetching, fuzz seeds) need no card.
    timeout -k 10 "$t" "$TESTS" --test-threads 8 --skip fuzz_targets --skip fetch:: --skip tokenizer:: --skip checkpoint:: >"$work/tests.txt" 2>&1
    rc=$?
    grep -E "^test result|FAILED|panicked|cooperative fragments" "$work/tests.txt" | head -40 | tee -a "$work/summary.txt"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && note "kernel tests: timed out after ${t}s (or killed: exit $rc) ($(grep -c ' ok$' "$work/tests.txt") passed by then)"
    pack
elif [ -n "$TESTS" ]; then
    note "== 1. kernel tests: out of budget"
else
    note "== 1. kernel tests: not run in tiny mode (CI runs them on lavapipe)"
fi

# The tiny models' goldens through the binary (the reference implementations' outputs are in
# the inputs files): the models as whole graphs on the card's tensor-core kernels (f16 storage;
# the TE-3DVAE as the job decodes, f32 on f16 operands). PASS or FAIL with the error.
D=tests/data
note "== 1. goldens of the tiny models"
for spec in "sdx4-unet|unet --config $D/sdx4/unet_config.json --weights $D/sdx4/unet.safetensors --inputs $D/sdx4/unet_io.safetensors --dtype f16" \
    "sdx4-unet-odd|unet --config $D/sdx4/unet_config.json --weights $D/sdx4/unet.safetensors --inputs $D/sdx4/unet_odd_io.safetensors --dtype f16" \
    "sdx4-vae|vae-decoder --config $D/sdx4/vae_config.json --weights $D/sdx4/vae.safetensors --inputs $D/sdx4/vae_io.safetensors --dtype f16" \
    "diffvsr-unet|diffvsr-unet --config $D/diffvsr_unet/config.json --weights $D/diffvsr_unet/unet.pt --inputs $D/diffvsr_unet/io.safetensors --dtype f16" \
    "diffvsr-unet-heads|diffvsr-unet --config $D/diffvsr_unet_heads/config.json --weights $D/diffvsr_unet_heads/unet.pt --inputs $D/diffvsr_unet_heads/io.safetensors --dtype f16" \
    "te3dvae|te3dvae-decoder --config $D/te3dvae/config.json --weights $D/te3dvae/weights.pt --inputs $D/te3dvae/io_f4.safetensors --dtype f16" \
    "te3dvae-f16-operands|te3dvae-decoder --config $D/te3dvae/config.json --weights $D/te3dvae/weights.pt --inputs $D/te3dvae/io_f4.safetensors --dtype f32 --f16-operands" \
    "te3dvae-f16-operands-winograd|te3dvae-decoder --config $D/te3dvae/config.json --weights $D/te3dvae/weights.pt --inputs $D/te3dvae/io_f4.safetensors --dtype f32 --f16-operands --winograd"; do
    IFS='|' read -r name args <<<"$spec"
    t=$(left 30 300)
    [ "$t" -eq 0 ] && { note "golden $name: out of budget"; continue; }
    # shellcheck disable=SC2086
    timeout -k 10 "$t" "$BIN" forward --model $args >"$work/golden-$name.txt" 2>&1
    note "golden $name: exit $? $(grep -oE "relative L2 error.*" "$work/golden-$name.txt" | head -1)"
done
# The full-size models' tensor-core paths against their exact f32 paths on the card, same
# random weights and inputs: the UNet window call in f16, the TE-3DVAE decode on f16 operands,
# each also with its 3x3 convolutions by Winograd (`;` separates the paths one exact run checks).
for spec in "diffvsr-unet|--model diffvsr-unet $check_unet --cfg-pair|--dtype f16;--dtype f16 --winograd" \
    "te3dvae|--model te3dvae-decoder $check_vae|--dtype f32 --f16-operands;--dtype f32 --f16-operands --winograd"; do
    IFS='|' read -r name args fasts <<<"$spec"
    t=$(left 60 300)
    [ "$t" -eq 0 ] && { note "f32 check $name: out of budget"; continue; }
    # Untuned: tiles change no value, and tuning these shapes would only spend the budget.
    # shellcheck disable=SC2086
    DIFFVSR_TUNE=off timeout -k 10 "$t" "$BIN" forward --random-weights 1 $args --dtype f32 --output "$work/exact-$name.safetensors" >"$work/exact-$name.txt" 2>&1
    rc=$?
    [ $rc -ne 0 ] && { note "$name f32: exit $rc (see exact-$name.txt)"; continue; }
    IFS=';' read -r -a paths <<<"$fasts"
    for fast in "${paths[@]}"; do
        t=$(left 60 300)
        [ "$t" -eq 0 ] && { note "$name ($fast): out of budget"; continue; }
        # shellcheck disable=SC2086
        DIFFVSR_TUNE=off timeout -k 10 "$t" "$BIN" forward --random-weights 1 $args $fast --expect "$work/exact-$name.safetensors" >>"$work/exact-$name.txt" 2>&1
        note "$name ($fast) against f32: exit $? $(grep -oE "relative L2 error.*" "$work/exact-$name.txt" | tail -1)"
    done
    rm -f "$work/exact-$name.safetensors"
done
pack

# 2. The side-by-side table, keeping time for the profiles.
t=$(left 420 90)
note "== 2. side by side (budget ${t}s)"
if [ "$t" -gt 0 ]; then
    # PyTorch's times vary little: fewer repetitions leave more of the call to the engine.
    # Its files are packed every 30 s as they come: a call cut inside it keeps what ran.
    # (Its own partial name: a tar it leaves running when stopped writes nothing the next pack
    # reads; its sleep is stopped with it, not left holding the call's output open.)
    (trap 'kill $! 2>/dev/null; exit 0' TERM; while :; do sleep 30 & wait $!; pack bg; done) &
    packer=$!
    OUT="$work/side-by-side" RUN_BUDGET=$t REF_WARMUP=${REF_WARMUP:-2} REF_ITERS=${REF_ITERS:-6} REF_TIMEOUT=${REF_TIMEOUT:-130} \
        bash tools/side-by-side.sh "$mode" >"$work/side-by-side.txt" 2>&1
    kill "$packer" 2>/dev/null
    wait "$packer" 2>/dev/null
    rm -f "$out/session.tar.gz.bg"
    if [ -f "$work/side-by-side/table.md" ]; then
        # The models' rows here; the kernels' rows are in table.md.
        grep -vE "^\| [^|]*\| [^|]*\| [^|]*\| [^|]*\| [^|]*\| [^|]*\| [^|]*\| PyTorch none|^  " "$work/side-by-side/table.md" |
            grep -E "^(card|engine adapter|reference|PyTorch)|^\|( (case|diffvsr|te3dvae|sdx4)|---)" >>"$work/summary.txt"
    else
        note "no table: see side-by-side.txt"
        tail -20 "$work/side-by-side.txt" >>"$work/summary.txt"
    fi
fi
pack

# 3. Where the time goes: per-kernel GPU times of the two graphs the job runs most.
for spec in "diffvsr-unet|--model diffvsr-unet $profile_unet --dtype f16 --cfg-pair" \
    "te3dvae-f16-operands|--model te3dvae-decoder $profile_vae --dtype f32 --f16-operands"; do
    IFS='|' read -r name args <<<"$spec"
    t=$(left 60)
    [ "$t" -eq 0 ] && { note "== 3. profile $name: out of budget"; continue; }
    note "== 3. profile $name (limit ${t}s)"
    # shellcheck disable=SC2086
    timeout -k 10 "$t" "$BIN" forward --random-weights 1 $args --report --profile --runs 1 >"$work/profile-$name.txt" 2>&1 ||
        note "profile $name: exit $?"
    { grep -E "GPU time per|dispatches:|rror" "$work/profile-$name.txt" | head -4; grep -A 13 "GPU time by kernel" "$work/profile-$name.txt"; } | tee -a "$work/summary.txt"
    pack
done

# The full-size text encoder once on the card (f32, both prompts): it runs before the job's
# video models load.
t=$(left 30)
if [ "$t" -gt 0 ] && [ "$mode" = run ]; then
    note "== 3. text encoder (limit ${t}s)"
    timeout -k 10 "$t" "$BIN" forward --model text-encoder --random-weights 1 --random-inputs 2x77x1 --dtype f32 --report >"$work/text-encoder.txt" 2>&1 ||
        note "text encoder: exit $?"
    grep -E "GPU time per|rror" "$work/text-encoder.txt" | head -3 | tee -a "$work/summary.txt"
    pack
fi

# 4. The whole job, only with room for both sides.
need=${JOB_MIN:-240}
[ "$mode" = tiny ] && need=60
if [ $((budget - (SECONDS - start))) -ge "$need" ]; then
    t=$(left 500 5)
    note "== 4. the job beside the official pipeline (budget ${t}s)"
    each=$(((t - 20) / 2))
    OUT="$work/job" PART=job RUN_BUDGET=$t JOB_TIMEOUT=$each JOB_REF_TIMEOUT=$each bash tools/side-by-side.sh "$mode" >"$work/job.txt" 2>&1
    cat "$work/job/job.txt" >>"$work/summary.txt" 2>/dev/null || tail -5 "$work/job.txt" >>"$work/summary.txt"
    pack
else
    note "== 4. the job: not run, $((budget - (SECONDS - start))) s left (it needs $need): run PART=job tools/side-by-side.sh run in a call of its own"
fi
# 5. Rectangular tiles against squares (the engine alone), with what is left.
if [ $((budget - (SECONDS - start))) -ge "${TILES_MIN:-100}" ]; then
    t=$(left 300 5)
    note "== 5. a tiled job: rectangles against squares (budget ${t}s)"
    OUT="$work/tiles" PART=tiles RUN_BUDGET=$t TILES_TIMEOUT=$(((t - 10) / 2)) bash tools/side-by-side.sh "$mode" >"$work/tiles.txt" 2>&1
    cat "$work/tiles/tiles.txt" >>"$work/summary.txt" 2>/dev/null || tail -5 "$work/tiles.txt" >>"$work/summary.txt"
else
    note "== 5. the tiled job: not run, $((budget - (SECONDS - start))) s left: PART=tiles tools/side-by-side.sh run in a call of its own"
fi
note "session took $((SECONDS - start)) s of its ${budget} s budget"
pack
echo
cat "$out/summary.txt"
