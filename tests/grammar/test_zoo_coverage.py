"""Every op type of the onnx package's light model zoo appears in the families' graphs.

The zoo files (AlexNet, VGG19, ResNet50, DenseNet121, Inception v1/v2, ShuffleNet,
SqueezeNet, ZFNet) ship in the onnx wheel. Their data-node op types, as the describer
reads them (weights and shape plumbing folded away), are fixed below; the test checks
that list against the files and that a few samples of each family, exported and
described, use every one of them — so a predictor trained on the families' records
has seen every op of the zoo.
"""

from __future__ import annotations

import glob
import os

import onnx
import pytest
import torch

from einnas.grammar import Limits, build_network, load_grammar, sample
from einnas.grammar.export import export_onnx
from einnas.surrogate.describe import describe

ZOO = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "*.onnx")))
ZOO_OPS = {
    "Add", "AveragePool", "BatchNormalization", "Concat", "Conv", "Dropout", "Gemm", "GlobalAveragePool", "LRN",
    "MaxPool", "Mul", "Relu", "Reshape", "Softmax", "Sum", "Transpose",
}
FAMILIES = ["cnn", "resnet", "mobilenet", "transformer", "mlp"]
SHAPE = (3, 32, 32)


def test_zoo_files_use_exactly_the_listed_op_types():
    assert len(ZOO) == 9, ZOO
    per_file = {os.path.basename(path): set(describe(path).summary.op_counts) for path in ZOO}
    assert set().union(*per_file.values()) == ZOO_OPS
    assert {"LRN", "Dropout"} <= per_file["light_bvlc_alexnet.onnx"]
    assert "Sum" in per_file["light_resnet50.onnx"] and "Concat" in per_file["light_densenet121.onnx"]


@pytest.fixture(scope="module")
def family_ops():
    found = {}
    small = Limits(max_params=300_000, max_activations=400_000)  # quick exports on a shared CPU
    torch.manual_seed(0)
    for name in FAMILIES:
        ops = set()
        for arch in sample(load_grammar(name), 10, seed=11, input_shape=SHAPE, limits=small):
            model = export_onnx(build_network(arch, SHAPE, 10), SHAPE, 10)
            ops |= set(describe(model).summary.op_counts)
        found[name] = ops
    return found


def test_family_samples_cover_every_zoo_op(family_ops):
    assert sorted(ZOO_OPS - set().union(*family_ops.values())) == []


def test_each_family_exports_its_signature_nodes(family_ops):
    assert {"Conv", "LRN", "Dropout", "MaxPool", "Concat"} <= family_ops["cnn"]
    assert {"Conv", "GlobalAveragePool", "Sum", "Add", "Concat"} <= family_ops["resnet"]
    assert {"Conv", "GlobalAveragePool", "Sigmoid", "Mul"} <= family_ops["mobilenet"]  # silu = x * sigmoid(x)
    assert {"Softmax", "MatMul", "LayerNormalization", "Transpose"} <= family_ops["transformer"]
    assert {"Reshape", "MatMul", "Dropout"} <= family_ops["mlp"] and "Conv" not in family_ops["mlp"]
