"""The canonical text description and the summary figures, on graphs built here."""

from __future__ import annotations

import glob
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from einnas.cli import main
from einnas.errors import ModelError
from einnas.surrogate.describe import describe

RNG = np.random.default_rng(0)


def weight(name, *dims):
    return numpy_helper.from_array(RNG.standard_normal(dims).astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def model(nodes, inits, out_shape, in_shape=("batch", 3, 8, 8), outputs=("y",)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def resnet(blocks=4, channels=8):
    """Stem conv, ``blocks`` residual blocks, dynamic-batch Reshape plumbing, Gemm head."""
    n, inits = [], [weight("w0", channels, 3, 3, 3), weight("b0", channels)]
    n += [helper.make_node("Conv", ["x", "w0", "b0"], ["s"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                           strides=[1, 1], dilations=[1, 1], group=1),
          helper.make_node("Relu", ["s"], ["h0"])]
    for k in range(blocks):
        inits.append(weight(f"w{k + 1}", channels, channels, 3, 3))
        n += [helper.make_node("Conv", [f"h{k}", f"w{k + 1}"], [f"c{k}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", [f"c{k}"], [f"r{k}"]),
              helper.make_node("Add", [f"h{k}", f"r{k}"], [f"h{k + 1}"])]
    h = f"h{blocks}"
    inits += [ints("zero", [0]), ints("minus1", [-1]), weight("fc", 10, channels), weight("fb", 10)]
    n += [helper.make_node("GlobalAveragePool", [h], ["p"]),
          helper.make_node("Shape", ["p"], ["shape"]),
          helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
          helper.make_node("Concat", ["batch", "minus1"], ["target"], axis=0),
          helper.make_node("Reshape", ["p", "target"], ["flat"]),
          helper.make_node("Gemm", ["flat", "fc", "fb"], ["y"], transB=1)]
    return model(n, inits, None)


def shuffled(m: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The same graph: nodes in another valid topological order, tensors and nodes renamed."""
    rng = random.Random(seed)
    out = onnx.ModelProto()
    out.CopyFrom(m)
    nodes = list(out.graph.node)
    producer = {o: i for i, node in enumerate(nodes) for o in node.output}
    needs = [{producer[i] for i in node.input if i in producer} for node in nodes]
    done, order = set(), []
    while len(order) < len(nodes):
        k = rng.choice([i for i in range(len(nodes)) if i not in done and needs[i] <= done])
        done.add(k)
        order.append(k)
    keep = {v.name for v in (*out.graph.output, *out.graph.input, *out.graph.initializer)}
    rename = {o: f"v{rng.randrange(10**6)}_{o}" for node in nodes for o in node.output if o not in keep}
    for node in nodes:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
        node.name = f"n{rng.randrange(10**6)}"
    del out.graph.node[:]
    out.graph.node.extend(nodes[k] for k in order)
    return out


def lines_of(text):
    return text.splitlines()[2:]  # after the header and the input line


def test_header_inputs_and_plumbing_folded():
    d = describe(resnet())
    header, first = d.text.splitlines()[:2]
    assert header.startswith("einnas-onnx v1 ")
    assert first == "x = input Nx3x8x8"
    for folded in ("Shape", "Gather", "Concat", "Constant"):
        assert folded not in d.text
    assert "Reshape Nx8" in d.text  # its shape known through the folded plumbing
    assert d.summary.folded == 3 and d.summary.nodes == 1 + 1 + 4 * 3 + 3


def test_same_graph_in_any_order_gives_identical_text():
    for m in (resnet(), resnet(blocks=2), branches()):
        text = describe(m).text
        for seed in range(4):
            assert describe(shuffled(m, seed)).text == text


def branches():
    """x fans out into identical and different branches joined by Concat (symmetric parts)."""
    n = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["x"], ["b"]),
         helper.make_node("Sigmoid", ["a"], ["a2"]), helper.make_node("Tanh", ["b"], ["b2"]),
         helper.make_node("Relu", ["x"], ["c"]),
         helper.make_node("Concat", ["a2", "b2", "c", "x"], ["y"], axis=1)]
    return model(n, [], None)


def test_fan_out_tensors_are_named_and_every_line_states_its_inputs():
    text = describe(branches()).text
    assert "prev" not in text and "()" not in text
    for line in lines_of(text):
        assert re.match(r"^(\w+(, \w+)*) = \w+\((x|t\d+)", line), line
    assert "Concat(" in text and "axis=1" in text


def test_attributes_scalars_defaults_and_collapsed_lists():
    n = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 2, 1, 2], group=3,
                          strides=[1, 1], dilations=[1, 1]),
         helper.make_node("LeakyRelu", ["c"], ["l"], alpha=0.2),
         helper.make_node("LeakyRelu", ["l"], ["l2"], alpha=0.01),  # the ONNX default
         helper.make_node("Softmax", ["l2"], ["y"], axis=1)]
    text = describe(model(n, [weight("w", 6, 1, 3, 3)], None)).text
    assert "Conv(x, group=3, kernel_shape=3, pads=[1,2,1,2]) #54 Nx6x8x10" in text
    assert "LeakyRelu(alpha=0.2) > LeakyRelu > Softmax(axis=1)" in text
    assert "strides" not in text and "dilations" not in text


def test_run_length_encoding_of_repeated_blocks_and_chains():
    text = describe(resnet(blocks=6)).text
    # the 6th block's Add continues into the head on its line, so 5 blocks repeat
    assert re.search(r"^5x\[$", text, re.M), text
    assert len(text.splitlines()) < 12
    n = [helper.make_node("Relu" if k % 2 else "Sigmoid", [f"a{k}"], [f"a{k + 1}"]) for k in range(7)]
    n[0].input[0] = "x"
    n[-1].output[0] = "y"
    assert "3x[Relu > Sigmoid]" in describe(model(n, [], None)).text


def test_truncation_is_explicit():
    m = resnet(blocks=3)
    full = describe(m)
    assert not full.truncated and full.lines == len(full.text.splitlines())
    cut = describe(m, max_chars=150)
    assert cut.truncated and len(cut.text) <= 150 and re.search(r"\.\.\. \[truncated: \d+ more lines\]$", cut.text)
    assert full.text.startswith(cut.text.rsplit("\n", 1)[0])
    short = describe(m, max_lines=3)
    assert short.truncated and len(short.text.splitlines()) == 3


def test_summary_figures_match_hand_computation():
    d = describe(resnet(blocks=2, channels=8))
    s = d.summary
    params = 8 * 3 * 9 + 8 + 2 * 8 * 8 * 9 + 10 * 8 + 10
    assert s.params == params
    conv_macs = 8 * 8 * 8 * (3 * 9) + 2 * (8 * 8 * 8 * (8 * 9))
    assert s.macs == conv_macs + 10 * 8
    assert s.depth == 2 + 2 * 3 + 3  # stem, blocks (conv, relu, add), pool, reshape, gemm
    assert s.op_counts == {"Add": 2, "Conv": 3, "GlobalAveragePool": 1, "Gemm": 1, "Relu": 3, "Reshape": 1}
    assert json.loads(json.dumps(d.as_dict()))["summary"]["params"] == params


def test_cycle_dangling_input_and_duplicate_output_are_clear_errors():
    cyc = model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                 helper.make_node("Relu", ["a"], ["y"])], [], None)
    with pytest.raises(ModelError, match="cycle"):
        describe(cyc)
    with pytest.raises(ModelError, match="reads tensor 'nope'"):
        describe(model([helper.make_node("Add", ["x", "nope"], ["y"])], [], None))
    with pytest.raises(ModelError, match="already defined"):
        describe(model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["y"])], [], None))


def test_cli_describe_text_and_json(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(resnet().SerializeToString())
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("einnas-onnx v1") and "ops: Add 4, Conv 5" in out
    assert main(["describe", str(path), "-f", "json", "--max-lines", "4"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["truncated"] is True and data["format_version"] == 1 and data["summary"]["nodes"] == 17


SWEEP = """
import glob, json, os, sys, time, onnx
from einnas.errors import EinnasError
from einnas.surrogate.describe import describe
root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
for path in sorted(glob.glob(os.path.join(root, "**", "*.onnx"), recursive=True)):
    start = time.perf_counter()
    try:
        text, error = describe(path).text, None
    except EinnasError as e:
        text, error = None, str(e)
    print(json.dumps({"path": path, "ok": text is not None, "error": error,
                      "seconds": time.perf_counter() - start}), flush=True)
"""


def test_describes_every_model_of_the_onnx_backend_test_data():
    """Each file: a description or one clear line; never a traceback or a hang."""
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    expected = len(glob.glob(os.path.join(root, "**", "*.onnx"), recursive=True))
    if expected == 0:
        pytest.skip("this onnx installation ships no backend test data")
    run = subprocess.run([sys.executable, "-c", SWEEP], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(results) == expected
    for r in results:
        assert r["ok"] or (r["error"] and "\n" not in r["error"]), r
    assert sum(r["ok"] for r in results) >= 0.9 * expected


def test_cycle_and_dangling_tensor_errors_name_the_file(tmp_path, capsys):
    cyc = model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
                 helper.make_node("Relu", ["a"], ["y"])], [], None)
    dangling = model([helper.make_node("Add", ["x", "nope"], ["y"])], [], None)
    for name, proto, text in (("cycle.onnx", cyc, "cycle"), ("dangling.onnx", dangling, "reads tensor 'nope'")):
        path = tmp_path / name
        path.write_bytes(proto.SerializeToString())
        with pytest.raises(ModelError, match=rf"^{path}: .*{text}"):
            describe(path)
        assert main(["describe", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and err.count("\n") == 1
