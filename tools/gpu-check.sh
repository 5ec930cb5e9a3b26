#!/usr/bin/env bash
# One prepared run on a lent NVIDIA machine (no Rust toolchain, no network there):
#   1. here:  tools/gpu-check.sh build     -> builds release binaries into .device-bin/ (the
#             Vulkan loader's .debs in .gl/ come from tools/gpu-session.sh build: run that first);
#             carry .device-bin and .gl
#   2. there: tools/gpu-check.sh run       -> unpacks the Vulkan loader from .gl/, lists devices,
#             runs every kernel test (the cooperative-matrix ones included), the full-size
#             forwards CI leaves to request (the DiffVSR UNet on one window, the TE-3DVAE, the text encoder;
#             random weights, with a per-kernel profile) and the kernel benchmark in f16 and
#             f32, packing the logs into $OUT/gpu-check.tar.gz (OUT defaults to ./gpu-out);
#             exits 1 where a step failed or timed out (failures.txt in the logs lists them).
# tools/gpu-session.sh is the one call to make first (a session's device time fits one call);
# this is the longer diagnosis, for device time left over. Its steps' limits add up to about
# 1200 s, past one call's 600: lower TEST_TIMEOUT, FORWARD_TIMEOUT and BENCH_TIMEOUT to fit the
# call (every step is packed as it ends, so a call cut short keeps what ran).
# Record what it measured in BENCHMARKS.md with the card's name.
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-run}" in
build)
    set -e
    cargo build --release --bin diffvsr-wgpu
    # The library's unit tests (every kernel against its CPU reference) as one binary.
    bin=$(cargo test --release --lib --no-run --message-format=json 2>/dev/null |
        python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["lib"]: print(m["executable"])' | tail -1)
    mkdir -p .device-bin
    cp target/release/diffvsr-wgpu .device-bin/
    cp "$bin" .device-bin/kernel-tests
    strip .device-bin/diffvsr-wgpu .device-bin/kernel-tests || true
    . tools/device-files.sh
    compress_for_device .device-bin/diffvsr-wgpu .device-bin/kernel-tests
    # What the binaries were built from, and where the test binary looks for tests/data
    # (compiled in; a run links it to the card machine's copy of the tree where that differs).
    echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +changes)" >.device-bin/commit
    pwd >.device-bin/manifest-dir
    ls -la .device-bin
    check_travel_size .device-bin .gl
    ;;
run)
    # Logs go to $log and are packed into $OUT/gpu-check.tar.gz after every step: a device call
    # brings back at most 8 files, and a call cut short still brings back what ran.
    out=${OUT:-./gpu-out}
    log=/tmp/gpu-check
    rm -rf "$log"
    mkdir -p "$out" "$log"
    pack() {
        tar -czf "$out/gpu-check.tar.gz.part" -C "$log" . && mv "$out/gpu-check.tar.gz.part" "$out/gpu-check.tar.gz"
    }
    # Each step runs whatever the one before did; a failed or timed-out one is listed in
    # failures.txt and makes the script's exit status 1 at the end.
    failed=0
    check() { # NAME STATUS
        if [ "$2" -ne 0 ]; then
            echo "FAILED: $1 (exit $2)" | tee -a "$log/failures.txt"
            failed=1
        fi
    }
    . tools/device-env.sh
    export RUST_LOG=warn,wgpu_hal=off
    # Tuned kernel tiles (the default on a GPU) persist here and come back with the logs.
    export DIFFVSR_TUNE_CACHE="$log/tuning"
    timeout -k 5 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$log/nvidia-smi.txt"
    timeout -k 5 30 ./.device-bin/diffvsr-wgpu devices 2>&1 | tee "$log/devices.txt"
    echo "== kernel tests"
    # An NVIDIA card must run the cooperative kernels on 16×16 fragments: with this set,
    # ops::tests::cooperative_kernels_run_here fails where they would all skip.
    DIFFVSR_EXPECT_COOP=16 timeout -k 10 "${TEST_TIMEOUT:-180}" ./.device-bin/kernel-tests --test-threads 8 --nocapture 2>&1 | tee "$log/tests.txt" | grep -E "test result|FAILED|panicked|skipped|cooperative fragments" | sed -n 1,60p
    check "tests.txt" "${PIPESTATUS[0]}"
    pack
    echo "== full-size forwards (random weights)"
    # Tuned (the default on a GPU; its log lists each shape's candidates and times), then with
    # the fixed rules' tiles, to measure what tuning gains and what it costs the graph build.
    RUST_LOG=warn,wgpu_hal=off,diffvsr_wgpu::gpu::tune=debug timeout -k 10 "${FORWARD_TIMEOUT:-120}" ./.device-bin/diffvsr-wgpu forward --model diffvsr-unet --random-weights 1 --random-inputs 2x64x64 --cfg-pair --report --profile 2>&1 | tee "$log/forward-diffvsr-unet.txt" | grep -v "tuned " | sed -n 1,30p
    check "forward-diffvsr-unet.txt" "${PIPESTATUS[0]}"
    pack
    timeout -k 10 "${FORWARD_TIMEOUT:-120}" ./.device-bin/diffvsr-wgpu forward --model diffvsr-unet --random-weights 1 --random-inputs 2x64x64 --cfg-pair --report --tune off 2>&1 | tee "$log/forward-diffvsr-unet-untuned.txt" | sed -n 1,30p
    check "forward-diffvsr-unet-untuned.txt" "${PIPESTATUS[0]}"
    pack
    # The rules' tiles with every GroupNorm + SiLU applied as its convolution loads (the tuned
    # run above times that choice per shape; this is all of them at once).
    timeout -k 10 "${FORWARD_TIMEOUT:-120}" ./.device-bin/diffvsr-wgpu forward --model diffvsr-unet --random-weights 1 --random-inputs 2x64x64 --cfg-pair --report --tune off --norm-into-conv on 2>&1 | tee "$log/forward-diffvsr-unet-norms-on-load.txt" | sed -n 1,30p
    check "forward-diffvsr-unet-norms-on-load.txt" "${PIPESTATUS[0]}"
    pack
    timeout -k 10 "${FORWARD_TIMEOUT:-120}" ./.device-bin/diffvsr-wgpu forward --model te3dvae-decoder --random-weights 1 --random-inputs 1x64x64 --report --profile 2>&1 | tee "$log/forward-te3dvae.txt" | sed -n 1,30p
    check "forward-te3dvae.txt" "${PIPESTATUS[0]}"
    pack
    # The same decode with its convolutions, linear layers and attention on f16 operands
    # (what `upscale` runs by default; forward's default stays f32 operands, as above).
    timeout -k 10 "${FORWARD_TIMEOUT:-120}" ./.device-bin/diffvsr-wgpu forward --model te3dvae-decoder --random-weights 1 --random-inputs 1x64x64 --f16-operands --report --profile 2>&1 | tee "$log/forward-te3dvae-f16-operands.txt" | sed -n 1,30p
    check "forward-te3dvae-f16-operands.txt" "${PIPESTATUS[0]}"
    pack
    timeout -k 10 "${FORWARD_TIMEOUT:-120}" ./.device-bin/diffvsr-wgpu forward --model text-encoder --random-weights 1 --random-inputs 2x77x1 --dtype f32 --report 2>&1 | tee "$log/forward-text-encoder.txt" | sed -n 1,12p
    check "forward-text-encoder.txt" "${PIPESTATUS[0]}"
    pack
    echo "== bench f16"
    timeout -k 10 "${BENCH_TIMEOUT:-150}" ./.device-bin/diffvsr-wgpu bench kernels --dtype f16 --iters 10 --json "$log/bench-f16.json" --roofline "$log/roofline-f16.svg" 2>&1 | tee "$log/bench-f16.txt"
    check "bench-f16.txt" "${PIPESTATUS[0]}"
    pack
    echo "== bench f32"
    timeout -k 10 "${BENCH_TIMEOUT:-150}" ./.device-bin/diffvsr-wgpu bench kernels --dtype f32 --iters 5 --no-coop --json "$log/bench-f32.json" 2>&1 | tee "$log/bench-f32.txt"
    check "bench-f32.txt" "${PIPESTATUS[0]}"
    pack
    exit $failed
    ;;
*)
    echo "usage: tools/gpu-check.sh build|run" >&2
    exit 2
    ;;
esac
