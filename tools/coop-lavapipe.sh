#!/usr/bin/env bash
# Runs the library's tests on the newest Mesa lavapipe, which has cooperative matrices
# (8×8×8 f16 × f16 → f32 on subgroups of 8), so the cooperative-matrix kernels run on the CPU:
# matmul, conv and attention at FS = 8 (their residual, GEGLU and bias epilogues, edge tiles,
# and every tiny model golden through them). Debian 12's lavapipe (CI's) has no cooperative
# matrices.
#
#   tools/coop-lavapipe.sh                  # the library suite and the model goldens (tests/*_golden.rs)
#   tools/coop-lavapipe.sh coop_matches     # tests whose names contain a filter (libtest args)
#
# (The filter and README tests start the binary, which would find the system's driver, and the
# GL tests use GL: they are not run here. One golden starts the binary too,
# video_unet_golden::plan_only_prints_what_a_run_allocates: that child runs on the system's C
# library, cannot load unstable's lavapipe, and falls back to the GL backend, where its f32
# graph passes; it checks GL there, not the cooperative kernels.)
#
# The first run downloads Mesa and its libraries from Debian unstable (~60 MB, Debian's own
# servers, through a private apt configuration: the system's sources are not touched) into
# .coop-lavapipe/ (git-ignored) and unpacks them there; nothing is installed. Unstable's Mesa
# needs unstable's C library, so the test binary runs under that library's loader. Needs
# network access to deb.debian.org, apt-get, dpkg and x86_64. COOP_LAVAPIPE_DIR moves the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath -m "${COOP_LAVAPIPE_DIR:-.coop-lavapipe}")
lib="$dir/root/usr/lib/x86_64-linux-gnu"

if [ ! -x "$dir/run" ]; then
    echo "coop-lavapipe: fetching Mesa from Debian unstable into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/debs" "$dir/root"
    echo 'deb http://deb.debian.org/debian sid main' > "$dir/apt/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$dir/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache"
        -o Dir::Etc::Preferences=/nonexistent -o Dir::Etc::PreferencesParts=/nonexistent
        -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq
    # Mesa's Vulkan drivers and everything they need, down to the C library.
    mapfile -t pkgs < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances mesa-vulkan-drivers | grep -v '^ ' | grep -v '^<' | sort -u)
    (cd "$dir/debs" && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >/dev/null)
    for deb in "$dir"/debs/*.deb; do
        dpkg -x "$deb" "$dir/root"
    done
    sed "s|\"library_path\": \"libvulkan_lvp.so\"|\"library_path\": \"$lib/libvulkan_lvp.so\"|" \
        "$dir/root/usr/share/vulkan/icd.d/lvp_icd.json" > "$dir/lvp_icd.json"
    cat > "$dir/run" <<EOF
#!/bin/sh
# Runs a program on unstable's C library with unstable's lavapipe as the only Vulkan driver.
exec env VK_ICD_FILENAMES="$dir/lvp_icd.json" "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "\$@"
EOF
    chmod +x "$dir/run"
fi

# The library's test binary (first) and the model goldens', built as `cargo test` builds them.
mapfile -t bins < <(cargo test --lib --tests --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
lib, goldens = [], []
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        if t.get("kind") == ["lib"]:
            lib.append(m["executable"])
        elif t.get("name", "").endswith("_golden"):
            goldens.append(m["executable"])
print("\n".join(lib + sorted(goldens)))')
[ ${#bins[@]} -gt 1 ] || { echo "coop-lavapipe: could not build the tests (run cargo test --no-run)" >&2; exit 1; }

# The adapter must run the cooperative kernels, or every cooperative test would skip and pass.
if ! DIFFVSR_EXPECT_COOP=8 "$dir/run" "${bins[0]}" --exact ops::tests::cooperative_kernels_run_here --nocapture 2>&1 | grep -E "^test device|cooperative fragments" >&2; then
    echo "coop-lavapipe: this lavapipe does not run the cooperative kernels; nothing would test them" >&2
    exit 1
fi
export DIFFVSR_EXPECT_COOP=8
status=0
for bin in "${bins[@]}"; do
    echo "coop-lavapipe: $(basename "$bin")" >&2
    "$dir/run" "$bin" --test-threads "${TEST_THREADS:-2}" "$@" || status=1
done
exit $status
