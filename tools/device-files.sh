# Sourced by the build steps of the scripts for a lent NVIDIA machine (gpu-check.sh,
# side-by-side.sh, gpu-session.sh). Everything that travels to it, the tracked files included,
# must fit 64 MiB (the device README's limit); the tracked test data alone take about 49 MiB.
# So the binaries and clips in .device-bin travel xz-compressed (a stripped binary: 16 MB, 4.5
# compressed) and tools/device-env.sh unpacks them there.

# Compresses the named files in place (FILE -> FILE.xz, the original removed).
compress_for_device() {
    local f
    for f in "$@"; do
        [ -f "$f" ] && xz -9 -T0 -f "$f"
    done
    return 0
}

# Fails where the tracked and untracked-not-ignored files and the carried folders (the
# arguments; those missing count nothing) would exceed the 64 MiB a device call takes: the
# call would be refused. (du fails on a missing path: the callers run under pipefail and set -e.)
check_travel_size() {
    local tracked untracked carried total limit=$((64 << 20))
    tracked=$({ git ls-files -z | du -cb --files0-from=- 2>/dev/null || true; } | tail -1 | cut -f1)
    untracked=$({ git ls-files -z -o --exclude-standard | du -cb --files0-from=- 2>/dev/null || true; } | tail -1 | cut -f1)
    carried=$({ du -cb -- "$@" 2>/dev/null || true; } | tail -1 | cut -f1)
    total=$((${tracked:-0} + ${untracked:-0} + ${carried:-0}))
    echo "what travels: tracked $((${tracked:-0} >> 10)) KiB, untracked $((${untracked:-0} >> 10)) KiB, carried ($*) $((${carried:-0} >> 10)) KiB: $((total >> 10)) KiB of $((limit >> 10))"
    if [ "$total" -gt "$limit" ]; then
        echo "over the device's 64 MiB: the call would be refused; carry less (or drop untracked files)" >&2
        return 1
    fi
}
