#!/usr/bin/env bash
# Checks that the crate compiles, with no clippy warnings, for Windows (DX12, Vulkan) and macOS
# (Metal), from this Linux machine: the code behind `cfg(windows)`, `cfg(unix)` and the
# target-specific dependencies (ash for the Vulkan memory budget, ctrlc's console handler) is
# built nowhere else, and no test here can reach it.
#
#   tools/cross-check.sh            # both targets
#   tools/cross-check.sh windows    # one of windows, macos
#
# `cargo clippy --all-targets` only: nothing is linked or run. Needs rustup (the targets' standard
# libraries are added, ~30 MB each, from the Rust project's servers) and, for ring's C code (the
# TLS of fetch-weights), a C compiler for the target: Debian's gcc-mingw-w64-x86-64 for Windows,
# clang for macOS, which compiles ring's few C files freestanding against three stub headers
# written into a temporary folder (macOS's SDK is not needed to type-check Rust). As root it
# installs the two Debian packages where missing. Output in target/cross (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(windows macos)
status=0

need_pkg() { # command package
    command -v "$1" > /dev/null && return 0
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -q "$2" > /dev/null
    else
        echo "cross-check: $1 is missing: install Debian's $2" >&2
        return 1
    fi
}

check() { # target, then env assignments for cargo
    local target=$1
    shift
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    echo "cross-check: cargo clippy --all-targets --target $target" >&2
    if ! env "$@" cargo clippy --quiet --all-targets --target "$target" --target-dir target/cross -- -D warnings; then
        echo "cross-check: $target FAILED" >&2
        status=1
    fi
}

for w in "${want[@]}"; do
    case $w in
    windows)
        need_pkg x86_64-w64-mingw32-gcc gcc-mingw-w64-x86-64 || { status=1; continue; }
        check x86_64-pc-windows-gnu
        ;;
    macos)
        need_pkg clang clang || { status=1; continue; }
        stubs=$(mktemp -d)
        trap 'rm -rf "$stubs"' EXIT
        # What ring's C files include beyond the compiler's own freestanding headers.
        printf '#define TARGET_OS_IPHONE 0\n#define TARGET_OS_OSX 1\n#define TARGET_OS_MAC 1\n' > "$stubs/TargetConditionals.h"
        printf '#define assert(x) ((void)0)\n' > "$stubs/assert.h"
        printf '#include <stddef.h>\nvoid *memcpy(void *, const void *, size_t);\nvoid *memset(void *, int, size_t);\nvoid *memmove(void *, const void *, size_t);\nint memcmp(const void *, const void *, size_t);\n' > "$stubs/string.h"
        resource=$(clang -print-resource-dir)
        check aarch64-apple-darwin CC_aarch64_apple_darwin=clang AR_aarch64_apple_darwin="$(command -v llvm-ar || echo ar)" \
            CFLAGS_aarch64_apple_darwin="-ffreestanding -nostdlibinc -isystem $resource/include -isystem $stubs"
        ;;
    *)
        echo "usage: tools/cross-check.sh [windows] [macos]" >&2
        exit 2
        ;;
    esac
done
[ $status = 0 ] && echo "cross-check: passed (${want[*]})" >&2
exit $status
