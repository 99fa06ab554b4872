"""Predictor features come from the graph itself: hand-counted values of a small hand-built ONNX graph."""

from __future__ import annotations

import math

import numpy as np
import pytest

from einnas.surrogate.features import MISSING, NUMERIC_NAMES, describe_file, feature_row, family
from einnas.surrogate.task import Task

L = math.log1p


@pytest.fixture(scope="module")
def residual_net(tmp_path_factory):
    """x(3x8x8) -> Conv 3x3 (4 ch) -> Relu -> Add(relu, conv) -> GlobalAveragePool -> Flatten -> Gemm(10)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    init = [helper.make_tensor(name, TensorProto.FLOAT, shape, rng.normal(size=shape).ravel().tolist())
            for name, shape in (("w1", [4, 3, 3, 3]), ("b1", [4]), ("w2", [10, 4]), ("b2", [10]))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Add", ["r", "c"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], init)
    path = tmp_path_factory.mktemp("g") / "residual.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return describe_file(path)


def test_graph_features_equal_hand_counted_values(residual_net):
    f = residual_net.features
    params = 4 * 3 * 3 * 3 + 4 + 10 * 4 + 10  # 162
    macs = (4 * 8 * 8) * (3 * 3 * 3) + 10 * 4  # conv: output elements x kernel volume; gemm 10 x 4
    expected = {
        "log_params": L(params), "log_macs": L(macs), "log_nodes": L(6), "log_depth": L(6),
        "log_input_numel": L(3 * 8 * 8), "input_channels": 3.0, "log_classes": L(10), "log_head_numel": L(4),
        "log_max_width": L(4), "log_downsample": L(64),  # 8x8 down to 1x1
        "conv_mean_kernel": 9.0, "conv_max_kernel": 9.0, "frac_strided_conv": 0.0, "log_n_depthwise": 0.0,
        "log_n_joins": L(1), "log_max_fanout": L(2),  # the conv output feeds Relu and Add
        "log_weighted_longest": L(2), "log_weighted_shortest": L(2), "log_nonlinear_longest": L(1),
        "log_fam_conv": L(1), "log_fam_dense": L(1), "log_fam_activation": L(1), "log_fam_add_like": L(1),
        "log_fam_reduce": L(1), "log_fam_plumbing": L(1), "log_fam_norm": 0.0,
        "frac_fam_conv": 1 / 6, "log_op_Relu": L(1), "log_op_Conv": L(1), "log_op_MatMul": 0.0,
    }
    for name, value in expected.items():
        assert f[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert residual_net.io() == ([3, 8, 8], 10)


def test_features_do_not_read_the_rendered_text(residual_net):
    """The same graph with its text replaced keeps its numeric row: nothing is parsed back from it."""
    from dataclasses import replace

    other = replace(residual_net, text="einnas-onnx v1\nx = input Nx1x2x2\ny = Relu(x) Nx1")
    np.testing.assert_array_equal(feature_row(residual_net), feature_row(other))


def test_task_conditioning_changes_the_feature_row(residual_net):
    small = Task("a", (3, 8, 8), 10, train_size=500, epochs=4)
    large = Task("b", (3, 8, 8), 10, train_size=50_000, epochs=4)
    a, b = feature_row(residual_net, small), feature_row(residual_net, large)
    col = NUMERIC_NAMES.index("task_log_train_size")
    assert a[col] == pytest.approx(L(500)) and b[col] == pytest.approx(L(50_000))
    assert feature_row(residual_net)[col] == MISSING  # no task: unknown, not zero
    assert a[NUMERIC_NAMES.index("task_epochs")] == 4.0


def test_proxies_become_features_and_missing_ones_are_marked(residual_net):
    row = feature_row(residual_net, proxies={"snip": 10.0, "synflow": -3.0})
    names = list(NUMERIC_NAMES)
    if "proxy_snip" in names:
        assert row[names.index("proxy_snip")] == pytest.approx(L(10.0))
    assert row[names.index("proxy_available")] == 1.0
    assert feature_row(residual_net)[names.index("proxy_available")] == 0.0


def test_op_families_put_new_ops_near_known_ones():
    assert family("LRN") == family("BatchNormalization") == "norm"
    assert family("Sum") == family("Add")
    assert family("Relu") == family("Gelu") == "activation"
    assert family("com.vendor.Conv") == "conv"  # a domain prefix does not hide the op
    assert family("NoSuchOp") == "other"


def test_unseen_op_of_a_known_family_gets_no_note_but_an_unknown_family_does(residual_net):
    from einnas.surrogate.score import ood_notes

    class Seen:
        def ranges(self):
            return {"op_types": ["Conv", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm"]}

    assert ood_notes(Seen(), residual_net) == []

    class Narrow:
        def ranges(self):
            return {"op_types": ["Conv", "Relu", "Add", "Flatten", "Gemm", "BatchNormalization"]}

    [note] = ood_notes(Narrow(), residual_net)
    assert "GlobalAveragePool" in note  # no reduction (global pooling) family in training
