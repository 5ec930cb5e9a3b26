#!/usr/bin/env bash
# Regenerates tests/data/y4m/: tiny y4m streams written by ffmpeg itself (2 frames of 13x7,
# an odd size), one per pixel format, chroma siting and range the filter reads, so the reader
# is tested on the real producer's bytes. Needs ffmpeg (apt-get install ffmpeg).
set -euo pipefail
cd "$(dirname "$0")/../tests/data/y4m"
src=(-v error -f lavfi -i testsrc2=size=16x8:rate=30000/1001 -vf scale=13:7 -frames:v 2 -strict -1)
for pf in yuv420p yuv422p yuv444p yuv411p gray; do
    ffmpeg -y "${src[@]}" -pix_fmt "$pf" -f yuv4mpegpipe "$pf.y4m"
done
# Above 8 bits ffmpeg's y4m writer (5.1 at least) cuts odd-width chroma rows to half the row's
# bytes (6.5 samples for 13 columns), which its own reader does not expect either: the high
# bit depth samples are 14x7 (even width, odd height), one 8-bit 14x7 to compare them with, and
# one odd-width 10-bit stream to check that the reader refuses it with a hint.
src14=(-v error -f lavfi -i testsrc2=size=16x8:rate=30000/1001 -vf scale=14:7 -frames:v 2 -strict -1)
for pf in yuv420p yuv422p yuv444p gray yuv420p10le yuv420p12le yuv422p10le yuv422p12le yuv444p10le yuv444p12le gray10le gray12le; do
    ffmpeg -y "${src14[@]}" -pix_fmt "$pf" -f yuv4mpegpipe "w14_$pf.y4m"
done
ffmpeg -y "${src[@]}" -pix_fmt yuv420p10le -f yuv4mpegpipe odd_width_yuv420p10le.y4m
for loc in left topleft; do
    ffmpeg -y "${src[@]}" -pix_fmt yuv420p -chroma_sample_location "$loc" -f yuv4mpegpipe "yuv420p_$loc.y4m"
done
ffmpeg -y "${src[@]}" -pix_fmt yuv420p -color_range pc -f yuv4mpegpipe yuv420p_full.y4m
ffmpeg -y "${src[@]}" -pix_fmt yuv420p -field_order tt -f yuv4mpegpipe yuv420p_tt.y4m
ffmpeg -version | head -1 > VERSION
