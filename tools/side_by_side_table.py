#!/usr/bin/env python3
"""Merges what tools/side-by-side.sh measured into one table of ratios (engine / PyTorch).

Reads, from the run's folder:
  cases.json              the model cases the script ran: name, shape, dtype, reference case name,
                          engine JSON file, status and error of the engine step, the engine command
  engine-*.json           `forward --report --json` outputs
  bench-kernels.txt       the engine's `bench kernels` table (text; parsed here)
  ref.json                tools/bench_reference.py's output
  meta.json               card, driver, date, commands
Prints the table (Markdown) and writes BENCHMARKS.json (per case: name, shape, engine ms,
PyTorch ms, ratio, peak memory of each; plus card, driver and date).

    python3 tools/side_by_side_table.py RUN_DIR [--json BENCHMARKS.json] [--md table.md]
"""
import argparse
import json
import os
import re
import sys


def load(path, default=None):
    # The shell writes error texts cut by bytes (a split UTF-8 character) and unescaped: read
    # them leniently rather than lose the whole file.
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return json.load(f, strict=False)
    except (OSError, ValueError):
        return default


UNIT = {"s": 1e3, "ms": 1.0, "us": 1e-3}
# The suffixes naming one implementation of a case among several (the row keeps the fastest):
# portable or cooperative tiles, the cooperative tiles on 4 subgroups, Winograd's algorithm.
PATH_SUFFIX = re.compile(r"(?: \(portable\)| portable| coop-v4 4sg| coop-v4| coop| \(4 subgroups\)| Winograd)$")


def parse_kernel_table(path):
    """{(base name, shape): (best ms, path label, all paths)} from `bench kernels` text output."""
    rows = {}
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return rows
    # The shape column starts where the header's "shape" does (the name column is as wide as the
    # longest name; 34 characters before that was so).
    col = 34
    for line in lines:
        if line.startswith("kernel ") and " shape " in line:
            col = line.index(" shape ") + 1
            continue
        # time, TFLOP/s, GB/s, then the fractions of the ceilings (%GEMM, %copy) where printed.
        m = re.match(r"^(?P<head>.*?)\s+(?P<t>[\d.]+) (?P<u>s|ms|us)\s+(?P<tf>\S+)\s+(?P<gb>\S+)(?:\s+\S+){0,2}\s*$", line)
        if not m or line.startswith("device"):
            continue
        head = m.group("head")
        name, shape = head[:col].strip(), head[col:].strip()
        ms = float(m.group("t")) * UNIT[m.group("u")]
        base = PATH_SUFFIX.sub("", name)
        label = name[len(base):].strip(" ()") or "default"
        best = rows.get((base, shape))
        paths = (best[2] if best else {}) | {label: ms}
        if best is None or ms < best[0]:
            rows[(base, shape)] = (ms, label, paths)
        else:
            rows[(base, shape)] = (best[0], best[1], paths)
    return rows


def gib(b):
    return None if b is None else round(b / 2**30, 3)


def fmt_ms(v):
    return "—" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def fmt_bytes(b):
    if b is None:
        return "—"
    if b >= 2**30:
        return f"{b / 2**30:.2f} GiB"
    return f"{b / 2**20:.1f} MiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--json", default="BENCHMARKS.json")
    ap.add_argument("--md", help="also write the Markdown table here")
    a = ap.parse_args()
    d = a.run_dir
    meta = load(os.path.join(d, "meta.json"), {})
    cases = load(os.path.join(d, "cases.json"), [])
    ref = load(os.path.join(d, "ref.json"), {}) or {}
    ref_models = {m["name"]: m for m in ref.get("models", [])}
    ref_kernels = {(k["name"], k["shape"]): k for k in ref.get("kernels", [])}

    out = []
    for c in cases:
        e = load(os.path.join(d, c["engine_json"])) if c.get("engine_json") else None
        r = ref_models.get(c.get("ref"))
        row = {
            "name": c["name"],
            "kind": "model",
            "shape": c.get("shape"),
            "engine_dtype": c.get("dtype"),
            "engine_command": c.get("command"),
            "engine_status": "ok" if e else c.get("status", "failed"),
            "engine_error": None if e else c.get("error", "no engine report"),
            "engine_ms": e.get("gpu_ms_median") if e else None,
            "engine_dispatches": e.get("dispatches") if e else None,
            "engine_flops": e.get("flops") if e else None,
            "engine_activation_bytes_bound": e.get("activation_bytes_bound") if e else None,
            "engine_weight_bytes": e.get("weight_bytes") if e else None,
            "engine_load_s": e.get("load_s") if e else None,
            "engine_planned_activation_bytes": e.get("planned_activation_bytes") if e else None,
            "engine_peak_bytes": e.get("measured_peak_bytes") if e else None,
            "engine_peak_note": "weights + activations as the engine allocated them (pool peak + arena)",
            "ref_name": c.get("ref"),
            "ref_dtype": r.get("dtype") if r else None,
            "ref_status": r.get("status") if r else "missing",
            "ref_error": r.get("error") if r else "no reference result",
            "ref_ms": r.get("ms") if r and r.get("status") == "ok" else None,
            "ref_peak_bytes": r.get("peak_bytes") if r else None,
            "ref_peak_note": ref.get("peak_note"),
        }
        out.append(row)

    if not meta.get("engine_device"):
        for c in cases:
            e = load(os.path.join(d, c["engine_json"])) if c.get("engine_json") else None
            if e and e.get("device"):
                dv = e["device"]
                meta["engine_device"] = f"{dv.get('name')} ({dv.get('backend')}, driver {dv.get('driver')} {dv.get('driver_info')})"
                break
    ktab = parse_kernel_table(os.path.join(d, "bench-kernels.txt"))
    kstatus = load(os.path.join(d, "kernels-status.json"), {})
    seen = set()
    for (name, shape), rk in ref_kernels.items():
        ek = ktab.get((name, shape))
        seen.add((name, shape))
        out.append({
            "name": name,
            "kind": "kernel",
            "shape": shape,
            "engine_dtype": meta.get("kernel_dtype"),
            "engine_command": kstatus.get("command"),
            "engine_status": "ok" if ek else "missing",
            "engine_error": None if ek else (kstatus.get("error") or "not in the engine's table"),
            "engine_ms": ek[0] if ek else None,
            "engine_path": ek[1] if ek else None,
            "engine_paths_ms": ek[2] if ek else None,
            "engine_peak_bytes": None,
            "ref_name": name,
            "ref_dtype": rk.get("dtype"),
            "ref_status": rk.get("status"),
            "ref_error": rk.get("error"),
            "ref_ms": rk.get("ms") if rk.get("status") == "ok" else None,
            "ref_peak_bytes": rk.get("peak_bytes"),
        })
    for (name, shape), ek in sorted(ktab.items()):
        if (name, shape) not in seen:
            out.append({"name": name, "kind": "kernel", "shape": shape, "engine_status": "ok", "engine_ms": ek[0], "engine_path": ek[1],
                        "engine_paths_ms": ek[2], "ref_status": "none", "ref_ms": None, "ref_error": "no PyTorch counterpart"})
    for row in out:
        e, r = row.get("engine_ms"), row.get("ref_ms")
        row["ratio"] = round(e / r, 3) if e and r else None

    result = {
        "date": meta.get("date") or ref.get("date"),
        "card": meta.get("card"),
        "driver": meta.get("driver"),
        "engine_device": meta.get("engine_device"),
        "torch": ref.get("torch"),
        "cuda": ref.get("cuda"),
        "diffusers": ref.get("diffusers"),
        "reference_device": ref.get("device"),
        "reference_timing": ref.get("timing"),
        "tiny": meta.get("tiny"),
        "commands": meta.get("commands", []) + ([ref["command"]] if ref.get("command") else []),
        "note": "ratio = engine ms / PyTorch ms (below 1: the engine is faster). Kernel rows: the engine's fastest path.",
        "cases": out,
    }
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)

    lines = [
        f"card: {result['card']}  driver: {result['driver']}  date: {result['date']}",
        f"engine adapter: {result['engine_device']}",
        f"reference: torch {result['torch']} (CUDA {result['cuda']}, diffusers {result['diffusers']}) on {result['reference_device']}, {result['reference_timing']}",
    ]
    if not ref or ref.get("error"):
        lines.append(f"PyTorch reference: {ref.get('error') if ref else 'no ref.json (did it run? see ref.txt)'}")
    lines += [
        "",
        "| case | shape | engine ms | PyTorch ms | engine ÷ PyTorch | engine peak | PyTorch peak | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in out:
        notes = []
        if row.get("engine_status") != "ok":
            notes.append(f"engine {row.get('engine_status')}: {str(row.get('engine_error'))[:120]}")
        if row.get("ref_status") not in ("ok", None):
            notes.append(f"PyTorch {row.get('ref_status')}: {str(row.get('ref_error'))[:120]}")
        if row.get("engine_dtype") or row.get("ref_dtype"):
            notes.append(f"{row.get('engine_dtype')} vs {row.get('ref_dtype')}")
        if row.get("engine_path"):
            notes.append(f"engine path {row['engine_path']}")
        if row.get("engine_load_s") is not None:
            notes.append(f"engine model built in {row['engine_load_s']:.1f} s")
        if row.get("engine_flops") and row.get("engine_ms"):
            notes.append(f"engine {row['engine_flops'] / 1e12:.2f} TFLOP, {row['engine_flops'] / row['engine_ms'] * 1e-9:.1f} TFLOP/s")
        ratio = row.get("ratio")
        lines.append(
            f"| {row['name']} | {row.get('shape')} | {fmt_ms(row.get('engine_ms'))} | {fmt_ms(row.get('ref_ms'))} | "
            f"{'—' if ratio is None else f'{ratio:.2f}'} | {fmt_bytes(row.get('engine_peak_bytes'))} | {fmt_bytes(row.get('ref_peak_bytes'))} | {'; '.join(notes)} |"
        )
    lines.append("")
    lines.append("commands:")
    lines += [f"  {c}" for c in result["commands"]]
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")
    print(f"\nwrote {a.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
