"""Sweep: every ONNX file a stranger might hand ``einnas score`` / ``describe``.

Scores (and describes) each model of the installed onnx package's backend test data
(``node``, ``light``, ``simple``, ``pytorch-converted``, ``pytorch-operator``, where
present) and a set of hand-made hostile files, in one process, and prints how many
were scored with proxies, scored without proxies, refused with one line (an
:class:`~einnas.errors.EinnasError` or a ``Score.error``), crashed (any other
exception: a defect) or took longer than ``--limit`` seconds (a hang: a defect).

    nice -n 19 python benchmarks/sweep_onnx_inputs.py [--limit 30] [--only light] [-v]

Prints the counts, then every crash and hang with its reason, then the slowest files.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def backend_files(only: str | None = None) -> list[Path]:
    """The ONNX models of the onnx package's backend test data (sorted, by folder)."""
    import onnx

    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    files = []
    for folder in ("node", "light", "simple", "pytorch-converted", "pytorch-operator"):
        if only and folder != only:
            continue
        root = data / folder
        if not root.is_dir():
            print(f"(no {root.relative_to(data.parent)} in this onnx)", file=sys.stderr)
            continue
        files += sorted(root.glob("*/model.onnx")) + sorted(root.glob("*.onnx"))
    return files


def hostile_files(folder: Path) -> list[Path]:
    """Hand-made files that must be refused in one line or scored correctly."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(name, model):
        path = folder / name
        path.write_bytes(model.SerializeToString() if isinstance(model, onnx.ModelProto) else model)
        return path

    def mlp(inputs=None, outputs=None, nodes=None, inits=None, opset=17):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
        w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
        graph = helper.make_graph(nodes if nodes is not None else [helper.make_node("MatMul", ["x", "w"], ["y"])],
                                  "g", inputs or [x], outputs or [y], inits if inits is not None else [w])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])

    good = mlp().SerializeToString()
    out = [save("zero_bytes.onnx", b""), save("truncated.onnx", good[: len(good) // 2]),
           save("text.onnx", b"this is not a model\n" * 20)]
    for name, location in (("external_passwd.onnx", "/etc/passwd"), ("external_up.onnx", "../../x.bin"),
                           ("external_missing.onnx", "w.bin")):
        m = mlp()
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        out.append(save(name, m))
    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2_000_000_000, 2], raw_data=b"\0" * 32)
    out.append(save("huge_declared.onnx", mlp(inits=[huge])))
    out.append(save("no_nodes.onnx", mlp(nodes=[], inits=[])))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    out.append(save("output_is_input.onnx", mlp(outputs=[x], nodes=[], inits=[])))
    out.append(save("output_is_input_with_node.onnx",
                    mlp(outputs=[x, helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])))
    sym = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C"])
    out.append(save("symbolic_dims.onnx", mlp(inputs=[sym])))
    x2 = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 4])
    y2 = helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["N", 4])
    out.append(save("two_in_two_out.onnx", mlp(
        inputs=[x, x2], outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]), y2],
        nodes=[helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["y", "x2"], ["y2"])])))
    ids = helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 16])
    emb = numpy_helper.from_array(np.ones((100, 8), np.float32), "emb")
    w2 = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    out.append(save("int64_tokens.onnx", mlp(
        inputs=[ids], outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 4])],
        nodes=[helper.make_node("Gather", ["emb", "x"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])],
        inits=[emb, w2])))
    out.append(save("int_output.onnx", mlp(
        outputs=[helper.make_tensor_value_info("k", TensorProto.INT64, ["N"])],
        nodes=[helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("ArgMax", ["y"], ["k"], axis=1, keepdims=0)])))
    cyc = mlp(nodes=[helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                     helper.make_node("MatMul", ["a", "w"], ["y"])])
    out.append(save("cycle.onnx", cyc))
    out.append(save("dangling.onnx", mlp(nodes=[helper.make_node("MatMul", ["x", "nowhere"], ["y"])], inits=[])))
    out.append(save("unknown_op.onnx", mlp(nodes=[helper.make_node("FooBar", ["x", "w"], ["y"], domain="my.ops")])))
    out.append(save("future_opset.onnx", mlp(opset=99)))
    scalar = helper.make_tensor_value_info("x", TensorProto.FLOAT, [])
    out.append(save("scalar_input.onnx", mlp(
        inputs=[scalar], outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        nodes=[helper.make_node("Relu", ["x"], ["y"])], inits=[])))
    zero = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 0])
    out.append(save("zero_dim.onnx", mlp(inputs=[zero])))
    neg = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, -3])
    out.append(save("negative_dim.onnx", mlp(inputs=[neg])))
    fp16 = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 8])
    w16 = numpy_helper.from_array(np.ones((8, 4), np.float16), "w")
    out.append(save("float16.onnx", mlp(inputs=[fp16], outputs=[helper.make_tensor_value_info(
        "y", TensorProto.FLOAT16, ["N", 4])], inits=[w16])))
    no_shape = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    out.append(save("no_input_shape.onnx", mlp(inputs=[no_shape])))
    seq = onnx.ModelProto()
    seq.CopyFrom(mlp())
    seq.graph.output[0].type.Clear()
    seq.graph.output[0].type.sequence_type.elem_type.tensor_type.elem_type = TensorProto.FLOAT
    out.append(save("sequence_output.onnx", seq))
    loop = onnx.ModelProto()
    loop.CopyFrom(mlp())
    loop.graph.node[0].attribute.append(helper.make_attribute("body", loop.graph))
    out.append(save("self_subgraph.onnx", loop))
    (folder / "a_folder.onnx").mkdir(exist_ok=True)
    out.append(folder / "a_folder.onnx")
    out.append(folder / "missing.onnx")
    return out


def sweep(files, limit: float, verbose: bool):
    """Describe and score each file; yield ``(file, outcome, seconds, detail)``."""
    from einnas.errors import EinnasError
    from einnas.surrogate.describe import describe
    from einnas.surrogate.score import Scorer

    scorer = Scorer()
    signal.signal(signal.SIGALRM, _alarm)
    for path in files:
        for stage in ("describe", "score"):
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                if stage == "describe":
                    describe(path)
                    outcome, detail = "described", ""
                else:
                    (s,) = scorer.score_files([path])
                    if s.error is not None:
                        outcome, detail = "refused", s.error
                    elif not (0.0 <= s.mean <= 1.0) or s.std != s.std:
                        outcome, detail = "crashed", f"prediction {s.mean} ± {s.std}"
                    elif s.proxies:
                        outcome, detail = "scored without proxies", s.proxies
                    else:
                        outcome, detail = "scored", s.note
            except _Hang:
                outcome, detail = "hang", f"over {limit:g} s"
            except EinnasError as error:
                outcome, detail = "refused", str(error)
                if "\n" in detail.strip():
                    outcome, detail = "crashed", "multi-line message: " + detail[:200]
            except BaseException as error:  # noqa: BLE001 - a crash is what the sweep looks for
                if isinstance(error, KeyboardInterrupt):
                    raise
                outcome, detail = "crashed", f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            seconds = time.perf_counter() - start
            if verbose:
                print(f"{stage:8s} {outcome:24s} {seconds:6.2f}s {path}: {detail[:150]}", file=sys.stderr)
            yield path, stage, outcome, seconds, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=30.0, help="seconds per file and stage counted as a hang")
    parser.add_argument("--only", help="one backend folder (light, simple, ...) or 'hostile'")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = [] if args.only == "hostile" else backend_files(args.only)
        groups = {p: p.parent.parent.name if p.name == "model.onnx" else p.parent.name for p in files}
        if args.only in (None, "hostile"):
            for p in hostile_files(Path(tmp)):
                groups[p] = "hostile"
                files.append(p)
        results = list(sweep(files, args.limit, args.verbose))
    counts = {stage: Counter() for stage in ("describe", "score")}
    by_group = Counter()
    for path, stage, outcome, _, _ in results:
        counts[stage][outcome] += 1
        if stage == "score":
            by_group[groups[path], outcome] += 1
    print(f"{len(files)} files ({', '.join(f'{g} {n}' for g, n in Counter(groups.values()).items())})")
    for stage, counter in counts.items():
        order = ["scored", "scored without proxies", "described", "refused", "crashed", "hang"]
        print(f"{stage:8s} " + "  ".join(f"{k}: {counter[k]}" for k in order if k in counter or k in ("crashed", "hang")))
    for group in dict.fromkeys(groups.values()):
        print(f"  score/{group}: " + ", ".join(f"{o} {n}" for (g, o), n in sorted(by_group.items()) if g == group))
    bad = [r for r in results if r[2] in ("crashed", "hang")]
    for path, stage, outcome, seconds, detail in bad:
        print(f"DEFECT {stage} {outcome} {path.parent.name}/{path.name}: {detail}")
    slow = sorted(results, key=lambda r: -r[3])[:5]
    print("slowest: " + ", ".join(f"{r[1]} {r[0].parent.name}/{r[0].name} {r[3]:.1f}s" for r in slow))
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
