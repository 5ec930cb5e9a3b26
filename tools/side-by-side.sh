#!/usr/bin/env bash
# The engine beside PyTorch on the same card, in one device call (issue 10).
#
#   here:  tools/side-by-side.sh build   release binary -> .device-bin/; the official code's
#          models/ (and configs/) -> .whl/DiffVSR/ (DIFFVSR_REPO=/path/to/clone); wheels for what
#          the card machine lacks (diffusers 0.30.0, rotary-embedding-torch) -> .whl/ (pip
#          download, no deps). Both folders are git-ignored; nothing fetched is committed.
#   there: tools/gpu-session.sh run runs this as its step 2 and packs the logs (a device call
#          brings back at most 8 files); alone:
#          tools/side-by-side.sh run     every case below, each under `timeout`, the whole run held
#          to RUN_BUDGET seconds (default 550, inside one 10-minute call); writes $OUT (or
#          ./gpu-out/side-by-side): the engine's JSON reports, the kernel table, ref.json, BENCHMARKS.json and
#          table.md, and prints the table.
#   here:  tools/side-by-side.sh tiny    the same on the CPU: the engine on lavapipe with the tiny
#          test configs (debug binary unless BIN is set), PyTorch on the CPU (PYTHON, default
#          /work/official/venv/bin/python; DIFFVSR_REPO default /work/official/DiffVSR). A smoke
#          test of the script: its numbers say nothing about any GPU.
#
# Cases: DiffVSR UNet window call (CFG pair x 8 frames) at 64², 128², 180x320 latent (f16), at
# 128² also with --winograd and with the CFG halves apart, at 180x320 also unpacked, and four
# windows in one call at 64²; TE-3DVAE decode of one 4-frame chunk at 128² and 180x320, f32, f16
# and f32 on f16 operands, at 128² also with --winograd; SD x4 UNet batch 16 at 128² (f16);
# `bench kernels` against PyTorch matmul / linear / SDPA / conv at the same shapes.
# A failing or timed-out case is recorded as failed with its error; the run goes on.
#
# PART=job (a call of its own; issue 9's benchmark): the whole job on a 32-frame 128x128 clip
# (512x512 out, made by ffmpeg at build time), 50 steps, both sides with random weights: the
# engine's `upscale --random-weights` (wall time; peak GPU memory sampled by nvidia-smi) and the
# official pipeline (tools/bench_official_pipeline.py: UNet fp16, VAE fp32 as released;
# torch.cuda.max_memory_allocated). Writes job.txt and job-ref.json. In tiny mode: 12 frames of
# 8x8, 2 steps, the tiny test configs, on lavapipe and the CPU.
#
# PART=tiles (the engine alone): a tiled job, 8 frames of 640x360, 4 steps, random
# weights, run with `--tile auto` (rectangles: 4 UNet tiles of 344x216 under a 2 GiB binding
# limit) and with `--tile 216` (the 8 squares auto took before, for the VAE too), the job's
# denoising and decoding times and the tiles each ran. Writes tiles.txt. In tiny mode: 8 frames
# of 24x16 in tiles of 16 and of 8.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

mode=${1:-run}
case "$mode" in
build)
    set -e
    nice -n 10 cargo build --release --bin diffvsr-wgpu
    mkdir -p .device-bin
    cp target/release/diffvsr-wgpu .device-bin/
    strip .device-bin/diffvsr-wgpu || true
    # PART=job's clip (the card machine has no ffmpeg): 32 frames of 128x128, 4:2:0.
    ffmpeg -v error -y -f lavfi -i testsrc2=size=128x128:rate=25 -frames:v 32 -pix_fmt yuv420p -f yuv4mpegpipe .device-bin/clip-128.y4m
    # PART=tiles' clip: 8 frames of 640x360.
    ffmpeg -v error -y -f lavfi -i testsrc2=size=640x360:rate=25 -frames:v 8 -pix_fmt yuv420p -f yuv4mpegpipe .device-bin/clip-360.y4m
    . tools/device-files.sh
    compress_for_device .device-bin/diffvsr-wgpu .device-bin/clip-128.y4m .device-bin/clip-360.y4m
    repo=${DIFFVSR_REPO:-/work/official/DiffVSR}
    rm -rf .whl/DiffVSR
    if [ -d "$repo/models" ]; then
        mkdir -p .whl/DiffVSR
        cp -a "$repo/models" .whl/DiffVSR/
        [ -d "$repo/configs" ] && cp -a "$repo/configs" .whl/DiffVSR/
        echo "official code: $repo -> .whl/DiffVSR (git-ignored, not committed)"
    else
        # Without it every PyTorch row of the device call would fail.
        echo "no official clone at $repo: set DIFFVSR_REPO to a clone with models/ and configs/" >&2
        exit 1
    fi
    # The card machine (Python 3.12, torch, einops, huggingface_hub, safetensors, Pillow, ...) lacks
    # diffusers and rotary-embedding-torch: pure-Python wheels, no deps (see the device README).
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        "diffusers==${DIFFUSERS_VERSION:-0.30.0}" "rotary-embedding-torch==${ROTARY_VERSION:-0.2.3}" ||
        echo "pip download failed: bring the wheels into .whl/ by hand" >&2
    if ! ls .whl/diffusers-*.whl .whl/rotary_embedding_torch-*.whl >/dev/null 2>&1; then
        echo "the diffusers and rotary-embedding-torch wheels are not in .whl/: the reference would fail" >&2
        exit 1
    fi
    ls -la .device-bin .whl
    check_travel_size .device-bin .gl .whl
    echo "carry to the device: .device-bin .gl .whl"
    exit 0
    ;;
run | tiny) ;;
*)
    echo "usage: tools/side-by-side.sh build|run|tiny" >&2
    exit 2
    ;;
esac

out=${OUT:-./gpu-out/side-by-side}
PART=${PART:-all} # all | models | kernels | job | tiles
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$SECONDS
if [ "$mode" = tiny ]; then
    BIN=${BIN:-$ROOT/target/debug/diffvsr-wgpu}
    PY=${PYTHON:-/work/official/venv/bin/python}
    REPO=${DIFFVSR_REPO:-/work/official/DiffVSR}
    budget=${RUN_BUDGET:-300}
    runs=2
    kdtype=f16
else
    BIN=${BIN:-$ROOT/.device-bin/diffvsr-wgpu}
    PY=${PYTHON:-python3}
    REPO=${DIFFVSR_REPO:-$ROOT/.whl/DiffVSR}
    budget=${RUN_BUDGET:-550}
    runs=5
    kdtype=${KERNEL_DTYPE:-f16}
    . tools/device-env.sh
    # Wheels brought in .whl/ (no network there), into a private folder on PYTHONPATH.
    if ls .whl/*.whl >/dev/null 2>&1 && ! "$PY" -c "import diffusers, rotary_embedding_torch" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sbs-site .whl/*.whl >"$out/pip.txt" 2>&1 ||
            echo "wheel install failed: see $out/pip.txt"
        export PYTHONPATH="/tmp/sbs-site${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
export RUST_LOG=${RUST_LOG:-warn,wgpu_hal=off}
# The engine tunes its kernel tiles on a GPU (--tune auto): its cache comes back with the
# results (every shape's candidates and times), and the rows after the first of a shape read it.
export DIFFVSR_TUNE_CACHE=${DIFFVSR_TUNE_CACHE:-$out/tuning}

# Seconds left for a step: its own limit, cut to what the run budget leaves (0: skip it).
left() {
    local want=$1 rem=$((budget - (SECONDS - start)))
    if [ "$rem" -lt 10 ]; then echo 0; elif [ "$want" -gt "$rem" ]; then echo "$rem"; else echo "$want"; fi
}

card=$(timeout -k 5 30 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
driver=$(timeout -k 5 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
timeout -k 5 30 nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
timeout -k 5 30 "$BIN" devices >"$out/devices.txt" 2>&1 || true

# Tiny mode's job input: $2 frames of $1 (WxH) into the file $3, and the tiny test configs in
# $out/configs for upscale's --weights.
tiny_clip() {
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=$1:rate=25" -frames:v "$2" -pix_fmt yuv420p -f yuv4mpegpipe "$3"
    mkdir -p "$out/configs"
    cp tests/data/diffvsr_unet/config.json "$out/configs/unet_3d_config.json"
    cp tests/data/te3dvae/config.json "$out/configs/vae_config.json"
}

if [ "$PART" = tiles ]; then
    if [ "$mode" = tiny ]; then
        clip="$out/clip-tiles.y4m"
        tiny_clip 24x16 8 "$clip"
        steps=2 wargs=(--weights "$out/configs") tiles=(16 8)
    else
        clip=.device-bin/clip-360.y4m steps=4 wargs=() tiles=(auto 216)
    fi
    echo "== engine: a tiled job, 8 frames of $(head -c 40 "$clip" | grep -ao 'W[0-9]* H[0-9]*'), $steps steps, random weights" | tee "$out/tiles.txt"
    for t in "${tiles[@]}"; do
        lim=$(left "${TILES_TIMEOUT:-150}")
        [ "$lim" -eq 0 ] && { echo "--tile $t: out of budget" | tee -a "$out/tiles.txt"; continue; }
        t0=$(date +%s.%N)
        timeout -k 10 "$lim" "$BIN" upscale --random-weights 1 "${wargs[@]}" --steps "$steps" --tile "$t" -i "$clip" -o /dev/null >"$out/tiles-$t.log" 2>&1
        rc=$?
        t1=$(date +%s.%N)
        # The job's summary line: "… out, N windows, S s (denoising D s, decoding and writing
        # E s); tiles: …; windows per UNet call: …".
        sum=$(tr '\r' '\n' <"$out/tiles-$t.log" | grep -m1 "; tiles: ")
        job=$(sed -n 's/.*, \([0-9.]*\) s (denoising \([0-9.]*\) s, decoding and writing \([0-9.]*\) s); tiles: .*/\1 s by the job: denoising \2 s, decoding \3 s/p' <<<"$sum")
        ran=$(sed -n 's/.*; tiles: \(.*\); windows per UNet call.*/\1/p' <<<"$sum")
        "$PY" -c "import sys; print(f'--tile {sys.argv[3]}: {float(sys.argv[2])-float(sys.argv[1]):.1f} s wall with the model build, {sys.argv[5]}, exit {sys.argv[4]}; tiles: {sys.argv[6]}')" \
            "$t0" "$t1" "$t" "$rc" "${job:-?}" "${ran:-not printed (see tiles-$t.log)}" | tee -a "$out/tiles.txt"
    done
    exit 0
fi

if [ "$PART" = job ]; then
    if [ "$mode" = tiny ]; then
        clip="$out/clip.y4m"
        tiny_clip 8x8 12 "$clip"
        frames=12 size=8 steps=2 wargs=(--weights "$out/configs") pargs=(--tiny --device cpu)
    else
        clip=.device-bin/clip-128.y4m frames=32 size=128 steps=50 wargs=() pargs=()
    fi
    echo "== engine: the job, $frames frames ${size}x${size}, $steps steps, random weights" | tee "$out/job.txt"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$out/job-memory.csv" 2>/dev/null &
    smi=$!
    t0=$(date +%s.%N)
    # (`left` says 0 when nothing is left: never `timeout 0`, which means no limit.)
    lim=$(left "${JOB_TIMEOUT:-300}")
    if [ "$lim" -gt 0 ]; then
        timeout -k 10 "$lim" "$BIN" upscale --random-weights 1 "${wargs[@]}" --steps "$steps" -i "$clip" -o /dev/null >"$out/job-engine.log" 2>&1
        rc=$?
    else
        echo "out of run budget" >"$out/job-engine.log"
        rc=124
    fi
    t1=$(date +%s.%N)
    kill "$smi" 2>/dev/null
    tr '\r' '\n' <"$out/job-engine.log" | grep -v "^\s*$" | tail -2 | tee -a "$out/job.txt"
    peak=$(sort -n "$out/job-memory.csv" 2>/dev/null | tail -1)
    if [ $rc -eq 0 ]; then
        "$PY" -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3]); print(f'engine: {t:.1f} s wall (with model build), {t/n:.2f} s per output frame; peak GPU memory {sys.argv[4]} MiB (whole card, nvidia-smi)')" \
            "$t0" "$t1" "$frames" "${peak:-?}" | tee -a "$out/job.txt"
    else
        echo "engine: FAILED (exit $rc; see job-engine.log), no timing" | tee -a "$out/job.txt"
    fi
    echo "== official pipeline" | tee -a "$out/job.txt"
    lim=$(left "${JOB_REF_TIMEOUT:-300}")
    [ "$lim" -gt 0 ] || { echo "official pipeline: out of run budget" | tee -a "$out/job.txt"; exit 0; }
    timeout -k 10 "$lim" "$PY" tools/bench_official_pipeline.py --diffvsr-repo "$REPO" "${pargs[@]}" \
        --frames "$frames" --size "$size" --steps "$steps" --out "$out/job-ref.json" 2>&1 | tail -3 | tee -a "$out/job.txt"
    exit 0
fi

# name | engine args | dtype | shape | reference case name | limit (s)
# The UNet rows run as the sampler does (--cfg-pair: the two CFG halves share the layers before
# the text enters); PyTorch computes both halves throughout.
if [ "$mode" = tiny ]; then
    U="--model diffvsr-unet --config tests/data/diffvsr_unet/config.json"
    V="--model te3dvae-decoder --config tests/data/te3dvae/config.json"
    S="--model unet --config tests/data/sdx4/unet_config.json"
    cases=(
        "diffvsr-unet 8x12|$U --random-inputs 2x8x12 --dtype f16 --cfg-pair|f16|2x7x8x8x12|diffvsr-unet 8x12|60"
        "diffvsr-unet 16x16|$U --random-inputs 2x16x16 --dtype f16 --cfg-pair|f16|2x7x8x16x16|diffvsr-unet 16x16|60"
        "diffvsr-unet 16x16, Winograd|$U --random-inputs 2x16x16 --dtype f16 --cfg-pair --winograd|f16|2x7x8x16x16|diffvsr-unet 16x16|60"
        "diffvsr-unet 2 windows 8x12|$U --random-inputs 4x8x12 --dtype f16 --cfg-pair|f16|4x7x8x8x12|diffvsr-unet 2 windows 8x12|60"
        "te3dvae-decode 8x12 f32|$V --random-inputs 1x8x12 --dtype f32|f32|1x4x4x8x12|te3dvae-decode 8x12 float32|40"
        "te3dvae-decode 8x12 f16|$V --random-inputs 1x8x12 --dtype f16|f16|1x4x4x8x12|te3dvae-decode 8x12 float32|40"
        "te3dvae-decode 8x12 f32 on f16 operands|$V --random-inputs 1x8x12 --dtype f32 --f16-operands|f32|1x4x4x8x12|te3dvae-decode 8x12 float32|40"
        "te3dvae-decode 8x12 f16, Winograd|$V --random-inputs 1x8x12 --dtype f16 --winograd|f16|1x4x4x8x12|te3dvae-decode 8x12 float32|40"
        "sdx4-unet 2x16x16|$S --random-inputs 2x16x16 --dtype f16|f16|2x7x16x16|sdx4-unet 2x16x16|40"
    )
    refargs=(--device cpu --tiny --warmup 1 --iters 2)
    kargs=(--quick --iters 2 --dtype "$kdtype")
    ref_limit=180
else
    U="--model diffvsr-unet"
    V="--model te3dvae-decoder"
    # Most telling first: a run short of budget skips the rows at the end.
    cases=(
        "diffvsr-unet 128x128|$U --random-inputs 2x128x128 --dtype f16 --cfg-pair|f16|2x7x8x128x128|diffvsr-unet 128x128|75"
        # Every resnet's 3x3 convolutions by Winograd F(2x2,3x3): 20.1 of the 28.1 TFLOP, twice
        # the bytes bound. Whether it wins is this row's question.
        "diffvsr-unet 128x128, Winograd|$U --random-inputs 2x128x128 --dtype f16 --cfg-pair --winograd|f16|2x7x8x128x128|diffvsr-unet 128x128|75"
        # f32 storage with the convolutions on tensor cores, operands rounded to f16 (the job's
        # decode): against the official fp32 decode, whose convolutions PyTorch runs in TF32.
        "te3dvae-decode 128x128 f32 on f16 operands|$V --random-inputs 1x128x128 --dtype f32 --f16-operands|f32|1x4x4x128x128|te3dvae-decode 128x128 float32|30"
        # The same with its temporal 3x3x3 convolutions by Winograd (4/9 of their multiplies,
        # more passes over memory): whether that wins is this row's question.
        "te3dvae-decode 128x128 f32 on f16 operands, Winograd|$V --random-inputs 1x128x128 --dtype f32 --f16-operands --winograd|f32|1x4x4x128x128|te3dvae-decode 128x128 float32|30"
        "diffvsr-unet 180x320|$U --random-inputs 2x180x320 --dtype f16 --cfg-pair|f16|2x7x8x180x320|diffvsr-unet 180x320|90"
        "te3dvae-decode 180x320 f32 on f16 operands|$V --random-inputs 1x180x320 --dtype f32 --f16-operands|f32|1x4x4x180x320|te3dvae-decode 180x320 float32|40"
        "te3dvae-decode 128x128 f16|$V --random-inputs 1x128x128 --dtype f16|f16|1x4x4x128x128|te3dvae-decode 128x128 float16|30"
        "te3dvae-decode 128x128 f16, Winograd|$V --random-inputs 1x128x128 --dtype f16 --winograd|f16|1x4x4x128x128|te3dvae-decode 128x128 float16|30"
        "diffvsr-unet 64x64|$U --random-inputs 2x64x64 --dtype f16 --cfg-pair|f16|2x7x8x64x64|diffvsr-unet 64x64|75"
        "sdx4-unet 16x128x128|--model unet --random-inputs 16x128x128 --dtype f16 --cfg-pair|f16|16x7x128x128|sdx4-unet 16x128x128|60"
        # Four windows in one UNet call (the job's --windows-per-call auto at a 64² latent),
        # against the official UNet at the same batch; its one-window-per-call cost is 4 × the
        # 64x64 row.
        "diffvsr-unet 4 windows 64x64|$U --random-inputs 8x64x64 --dtype f16 --cfg-pair|f16|8x7x8x64x64|diffvsr-unet 4 windows 64x64|75"
        "te3dvae-decode 128x128 f32|$V --random-inputs 1x128x128 --dtype f32|f32|1x4x4x128x128|te3dvae-decode 128x128 float32|30"
        "te3dvae-decode 180x320 f16|$V --random-inputs 1x180x320 --dtype f16|f16|1x4x4x180x320|te3dvae-decode 180x320 float16|40"
        # The same without sharing the layers before the text between the CFG halves.
        "diffvsr-unet 128x128 halves apart|$U --random-inputs 2x128x128 --dtype f16|f16|2x7x8x128x128|diffvsr-unet 128x128|75"
        # A buffer per activation (the arena before packing became the default): its memory and
        # whether packing costs time, at the shape with the worst memory ratio.
        "diffvsr-unet 180x320 unpacked|$U --random-inputs 2x180x320 --dtype f16 --cfg-pair --no-pack-activations|f16|2x7x8x180x320|diffvsr-unet 180x320|90"
        "te3dvae-decode 180x320 f32|$V --random-inputs 1x180x320 --dtype f32|f32|1x4x4x180x320|te3dvae-decode 180x320 float32|40"
    )
    refargs=(--device cuda --warmup "${REF_WARMUP:-3}" --iters "${REF_ITERS:-10}")
    kargs=(--iters 10 --dtype "$kdtype")
    ref_limit=${REF_TIMEOUT:-170}
fi

# PyTorch first: it needs the least time and is what every ratio divides by.
t=$(left "$ref_limit")
[ "$PART" = kernels ] && refargs+=(--skip-models)
[ "$PART" = models ] && refargs+=(--skip-kernels)
rcmd="$PY tools/bench_reference.py --diffvsr-repo $REPO ${refargs[*]} --out $out/ref.json"
if [ "$t" -eq 0 ]; then
    echo '{"models": [], "kernels": [], "error": "out of run budget"}' >"$out/ref.json"
else
    echo "== PyTorch reference (limit ${t}s)"
    # shellcheck disable=SC2086
    timeout -k 10 "$t" $rcmd 2>&1 | tee "$out/ref.txt" | grep -vE "^\s*$" | tail -40
fi

commands=()
echo "[" >"$out/cases.json"
first=1
i=0
for c in "${cases[@]}"; do
    IFS='|' read -r name args dtype shape ref limit <<<"$c"
    [ "$PART" = kernels ] && continue
    if [ -n "${CASES:-}" ] && ! grep -qE "$CASES" <<<"$name"; then continue; fi
    i=$((i + 1))
    j="engine-$i.json"
    rm -f "$out/$j"
    cmd="$BIN forward --random-weights 1 $args --report --runs $runs --json $out/$j"
    t=$(left "$limit")
    status=ok
    err=""
    if [ "$t" -eq 0 ]; then
        status=skipped
        err="out of run budget"
    else
        echo "== engine: $name (limit ${t}s)"
        # shellcheck disable=SC2086
        timeout -k 10 "$t" $cmd >"$out/engine-$i.txt" 2>&1
        rc=$?
        grep -E "GPU time|planned|weights on|dispatches|error|Error" "$out/engine-$i.txt" | head -8
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            status=failed
            err="timed out after ${t}s (exit $rc; 137: killed, also by the OOM killer)"
        elif [ $rc -ne 0 ] || [ ! -s "$out/$j" ]; then
            status=failed
            err="exit $rc: $(tail -3 "$out/engine-$i.txt" | tr '\n\r\t"\\' '     ' | cut -c1-400)"
        fi
    fi
    commands+=("$cmd")
    [ $first -eq 1 ] || echo "," >>"$out/cases.json"
    first=0
    printf '{"name": "%s", "shape": "%s", "dtype": "%s", "ref": "%s", "engine_json": "%s", "status": "%s", "error": "%s", "command": "%s"}\n' \
        "$name" "$shape" "$dtype" "$ref" "$j" "$status" "$err" "$cmd" >>"$out/cases.json"
done
echo "]" >>"$out/cases.json"

kcmd="$BIN bench kernels ${kargs[*]}"
t=$(left "${KERNEL_TIMEOUT:-100}")
kerr=""
if [ "$PART" = models ]; then
    kerr="not run (PART=models)"
elif [ "$t" -eq 0 ]; then
    kerr="out of run budget"
else
    echo "== engine: bench kernels (limit ${t}s)"
    timeout -k 10 "$t" $kcmd >"$out/bench-kernels.txt" 2>"$out/bench-kernels.err"
    rc=$?
    [ $rc -eq 0 ] || kerr="exit $rc$([ $rc -eq 124 ] || [ $rc -eq 137 ] && echo ": timed out after ${t}s, partial table")"
fi
printf '{"command": "%s", "error": "%s"}\n' "$kcmd" "$kerr" >"$out/kernels-status.json"
[ "$PART" = models ] || commands+=("$kcmd")

engine_dev=""  # taken from the engine reports by side_by_side_table.py
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
    printf '{"date": "%s", "card": "%s", "driver": "%s", "engine_device": "%s", "kernel_dtype": "%s", "tiny": %s, "run_seconds": %s, "commands": [' \
        "$date" "${card:-none (no nvidia-smi)}" "${driver:-}" "$engine_dev" "$kdtype" "$([ "$mode" = tiny ] && echo true || echo false)" "$((SECONDS - start))"
    sep=""
    for c in "${commands[@]}"; do
        printf '%s"%s"' "$sep" "$c"
        sep=", "
    done
    echo "]}"
} >"$out/meta.json"

json=${BENCH_JSON:-$out/BENCHMARKS.json}
"$PY" tools/side_by_side_table.py "$out" --json "$json" --md "$out/table.md"
echo "run took $((SECONDS - start)) s; files in $out"
