#!/usr/bin/env python3
"""Where ONNX Runtime spends a forward pass, node by node, to set beside
this workspace's `layer_times` example (the same model and batch).

ONNX Runtime (2 intra-op threads, all graph optimisations) runs
torchvision's model exported to ONNX, with its profiler on; each node's
time is its median over the runs after a warm-up. Nodes are
printed in the order they run, then summed by operator and shapes.

    .venv/bin/python tools/ort_layers.py resnet50 1
    cargo run --release --example layer_times -- resnet50 1
"""
import collections
import json
import pathlib
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import torch
import torchvision

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import fill  # noqa: E402

THREADS = 2
RUNS = 40
WARM_UP = 5


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet50"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    model = getattr(torchvision.models, name)().eval()
    fill(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / f"{name}.onnx"
        torch.onnx.export(model, torch.zeros(batch, 3, 224, 224), str(path), input_names=["x"],
                          opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(pathlib.Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
        for _ in range(WARM_UP + RUNS):
            session.run(None, {"x": x})
        events = json.load(open(session.end_profiling()))

    # Each node's kernel times, in the order of its first run.
    nodes = collections.OrderedDict()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            args = e["args"]
            node = nodes.setdefault(e["name"], {"op": args.get("op_name"), "times": [],
                                                "shapes": (args.get("input_type_shape"),
                                                           args.get("output_type_shape"))})
            node["times"].append(e["dur"] / 1e3)

    def shape(io):
        return " ".join("x".join(map(str, next(iter(t.values())))) for t in io[:1])

    print(f"onnxruntime {ort.__version__}, {name}, batch {batch}, {THREADS} threads\n")
    total, kinds = 0.0, collections.defaultdict(lambda: [0, 0.0])
    for node_name, node in nodes.items():
        times = sorted(node["times"][WARM_UP:])
        ms = times[len(times) // 2]
        total += ms
        inputs, outputs = node["shapes"]
        kind = f"{node['op']} {shape(inputs)} -> {shape(outputs)}"
        kinds[kind][0] += 1
        kinds[kind][1] += ms
        print(f"{ms:9.3f} ms  {kind:48s} {node_name.removesuffix('_kernel_time')}")
    print(f"{total:9.3f} ms  all nodes\n\nby operator and shapes:")
    for kind, (count, ms) in sorted(kinds.items()):
        print(f"{ms:9.3f} ms  x{count:<3} {kind}")


if __name__ == "__main__":
    main()
