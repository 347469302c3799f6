#!/usr/bin/env python3
"""Forward-pass latency: resnet-rs against ONNX Runtime, in one session.

For each case it runs rounds that time this workspace's `bench_forward`
example between two timings of ONNX Runtime (2 intra-op threads, all
graph optimisations) on torchvision's model exported to ONNX, each round
sharing its ONNX Runtime timings with its neighbours. A round's ratio is
ours over the better of the two ORT medians beside it, so that a burst of
load on the shared machine skews one round rather than the result; the
table gives the median over the rounds of each time and of the ratio, and
the ratios' range. Weights are the fixture formula's (see
make_fixtures.py); latency does not depend on them.

    python3 -m venv .venv && .venv/bin/pip install torch torchvision onnx onnxruntime numpy
    .venv/bin/python tools/bench_vs_ort.py
"""
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import fill  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = [("resnet50", 1, 30), ("resnet50", 8, 10), ("resnet18", 1, 50)]
THREADS = 2
ROUNDS = 5


def ort_median(path, batch, runs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    session.run(None, {"x": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"x": x})
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def ours(model, batch, runs):
    out = subprocess.run(
        ["cargo", "run", "-q", "--release", "--example", "bench_forward", "--", model, str(batch), str(runs)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()
    return float(out[2]), float(out[4])


def main():
    subprocess.run(["cargo", "build", "-q", "--release", "--example", "bench_forward"], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted({c[0] for c in CASES}):
            model = getattr(torchvision.models, name)().eval()
            fill(model)
            path = pathlib.Path(tmp) / f"{name}.onnx"
            torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(path), input_names=["x"],
                              dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
        for name, batch, runs in CASES:
            path = pathlib.Path(tmp) / f"{name}.onnx"
            rounds = []
            before = ort_median(path, batch, runs)
            for _ in range(ROUNDS):
                mine, rss = ours(name, batch, runs)
                after = ort_median(path, batch, runs)
                theirs = min(before, after)
                rounds.append((mine, theirs, mine / theirs, rss))
                before = after
            mine, theirs, ratio, rss = (float(np.median(column)) for column in zip(*rounds))
            ratios = [r[2] for r in rounds]
            rows.append((name, batch, mine, theirs, ratio, (min(ratios), max(ratios)), rss))
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {THREADS} threads, {ROUNDS} rounds")
    print("| model | batch | resnet-rs ms | ONNX Runtime ms | ratio | ratio range | per image (ours / ORT) | peak RSS MB (ours) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, batch, mine, theirs, ratio, (low, high), rss in rows:
        print(f"| {name} | {batch} | {mine:.1f} | {theirs:.1f} | {ratio:.3f} | {low:.3f}-{high:.3f} "
              f"| {mine / batch:.1f} / {theirs / batch:.1f} | {rss:.1f} |")


if __name__ == "__main__":
    main()
