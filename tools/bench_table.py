#!/usr/bin/env python3
"""Print criterion's last results as a Markdown table of GFLOP/s.

Reads target/criterion/**/new/{benchmark,estimates}.json, as
left by `cargo bench -p resnet-runtime --bench kernels`; the benches count
one throughput element per FLOP, so elements/s are FLOP/s.

    python3 tools/bench_table.py [filter]
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
pattern = sys.argv[1] if len(sys.argv) > 1 else ""
rows = []
for bench in sorted(root.glob("**/new/benchmark.json")):
    meta = json.loads(bench.read_text())
    name = meta["full_id"]
    if pattern not in name:
        continue
    est = json.loads((bench.parent / "estimates.json").read_text())
    median_ns = est["median"]["point_estimate"]
    flops = (meta.get("throughput") or {}).get("Elements")
    gflops = f"{flops / median_ns:.1f}" if flops else "-"
    rows.append((name, median_ns / 1e6, gflops))
print("| benchmark | median ms | GFLOP/s |")
print("|---|---:|---:|")
for name, ms, gflops in rows:
    print(f"| {name} | {ms:.3f} | {gflops} |")
