# Sourced, from the repository's root, by the scripts that run on a lent NVIDIA machine
# (gpu-session.sh, gpu-check.sh, side-by-side.sh): the Vulkan loader carried in .gl/ (the card
# machine has none), the NVIDIA driver's ICD where the loader would not find it, the Vulkan
# backend, the binaries unpacked, and the test binary's tests/data.
if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && ! ls /usr/share/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export DIFFVSR_BACKEND=vulkan
# The binaries and clips travel xz-compressed (tools/device-files.sh): unpacked here, each time
# (a file kept from an earlier call may be older than its archive). Python's lzma: the machine
# may lack xz.
for z in .device-bin/*.xz; do
    [ -f "$z" ] || continue
    f=${z%.xz}
    if python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as i, open(sys.argv[2], "wb") as o:
    shutil.copyfileobj(i, o)' "$z" "$f.part"; then
        mv "$f.part" "$f"
        case "$f" in *.y4m) ;; *) chmod +x "$f" ;; esac
    else
        # Never a cut file in its place: the steps that need it fail as missing.
        rm -f "$f.part" "$f"
        echo "device-env: unpacking $z FAILED: the steps that need $(basename "$f") will fail" >&2
    fi
done
# The test binary finds tests/data at the path it was built in (compiled in): link that path to
# this copy of the tree where they differ.
manifest=$(cat .device-bin/manifest-dir 2>/dev/null || pwd)
if [ ! -e "$manifest" ]; then
    mkdir -p "$(dirname "$manifest")" && ln -s "$(pwd)" "$manifest"
fi
