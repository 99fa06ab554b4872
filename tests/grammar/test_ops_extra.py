"""The extra ops of conventional networks (grammar/ops_extra.py) against torch and ONNX.

Each op: analytic shape rule and parameter count equal to the built module, the
function equal to a trusted torch reference, and an ONNX export holding the node
type the model zoo uses, equal to torch under onnxruntime.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from einnas.grammar import REGISTRY, State, grammar_from_text, load_grammar
from einnas.grammar.export import compare_with_torch, export_onnx

IMG = State((6, 7, 9), "image")
NEW = {"lrn": (5,), "global_avgpool": (), "dropout": (30,), "flatten": ()}


def _build(name, args, state=IMG):
    spec = REGISTRY.get(name)
    return spec, spec.build(state, args), spec.shape(state, args)


@pytest.mark.parametrize("name", sorted(NEW))
def test_map_op_shape_and_params_match_torch(name):
    load_grammar()  # registers the built-in and extra ops
    spec, module, out = _build(name, NEW[name])
    assert not spec.sampled  # an extra: the default einspace grammar does not name it
    y = module.eval()(torch.randn(2, *IMG.shape))
    assert tuple(y.shape[1:]) == out.shape
    assert spec.count_params(IMG, NEW[name]) == sum(p.numel() for p in module.parameters()) == 0


def test_lrn_is_torch_local_response_norm_and_one_onnx_lrn_node():
    load_grammar()
    x = torch.randn(2, *IMG.shape)
    for args, size in [((3,), 3), ((), 5)]:
        _, module, _ = _build("lrn", args)
        assert torch.allclose(module(x), nn.LocalResponseNorm(size)(x))
        proto = export_onnx(module, IMG.shape, 6)
        assert [n.op_type for n in proto.graph.node] == ["LRN"]
        assert [a.i for a in proto.graph.node[0].attribute if a.name == "size"] == [size]
        assert compare_with_torch(module, proto, IMG.shape) < 1e-5
    for bad in [(4,), (0,)]:
        assert isinstance(REGISTRY.get("lrn").shape(IMG, bad), str)
    assert isinstance(REGISTRY.get("lrn").shape(State((5, 8), "tokens"), (3,)), str)


def test_dropout_drops_in_training_only():
    load_grammar()
    _, module, _ = _build("dropout", (50,))
    x = torch.ones(4, 1000)
    module.train()
    zeros = (module(x) == 0).float().mean().item()
    assert 0.4 < zeros < 0.6 and module(x).max().item() == pytest.approx(2.0)
    module.eval()
    assert torch.equal(module(x), x)
    assert isinstance(REGISTRY.get("dropout").shape(IMG, (0,)), str)


def test_flatten_then_col2im_is_an_image_of_one_pixel():
    load_grammar()
    flat = REGISTRY.get("flatten").shape(IMG, ())
    assert flat == State((1, 6 * 7 * 9), "tokens", (1, 1))
    assert REGISTRY.get("col2im").shape(flat, ()) == State((6 * 7 * 9, 1, 1), "image", None)
    _, module, _ = _build("flatten", ())
    x = torch.randn(2, *IMG.shape)
    assert torch.equal(module(x)[:, 0], x.flatten(1))  # channel-major, as ONNX Flatten


def test_sum_join_adds_any_number_of_branches():
    load_grammar()
    spec = REGISTRY.get("sum")
    assert spec.kind == "join"
    assert spec.shape((IMG,) * 3, ()) == IMG
    assert isinstance(spec.shape((IMG, State((6, 7, 8), "image")), ()), str)
    xs = [torch.randn(2, 3) for _ in range(4)]
    assert torch.allclose(spec.build((IMG,) * 4, ())(xs), sum(xs))


TINY = """
start: net
net: "sequential(" "sequential(" "sequential(" conv "," lrn ")" "," drop ")" "," "branching(4){" clone "," relu "," sum "}" ")"  // p=0.5
   | "sequential(" "sequential(" conv "," gap ")" "," "routing[" flat "," lin "," fold "]" ")"                                        // p=0.5
conv: "routing[" k "," w "," fold "]"
k: "im2col(3,1,1)"
w: "linear(8)"
fold: "col2im"
lrn: "lrn(3)"
drop: "dropout(25)"
clone: "clone(4)"
relu: "relu"
sum: "sum"
gap: "global_avgpool"
flat: "flatten"
lin: "linear(16)"
%import common.WS
%ignore WS
"""


@pytest.mark.parametrize("alt, expected", [
    (0, {"LRN", "Dropout", "Sum", "Relu", "Conv"}),
    (1, {"GlobalAveragePool", "Reshape", "Conv"}),
])
def test_export_keeps_the_model_zoo_nodes_and_matches_torch(alt, expected):
    from einnas.grammar import analyse, build_network, parse_arch

    grammar = grammar_from_text(TINY, "tiny.lark")
    text = [
        "sequential(sequential(sequential(routing[im2col(3,1,1), linear(8), col2im], lrn(3)), dropout(25)), "
        "branching(4){clone(4), relu, sum})",
        "sequential(sequential(routing[im2col(3,1,1), linear(8), col2im], global_avgpool), "
        "routing[flatten, linear(16), col2im])",
    ][alt]
    arch = parse_arch(text, grammar)
    assert arch.string == text
    torch.manual_seed(0)
    net = build_network(arch, (2, 6, 6), 3)
    assert sum(p.numel() for p in net.parameters()) == analyse(arch, (2, 6, 6), 3).params
    proto = export_onnx(net, (2, 6, 6), 3)
    ops = [n.op_type for n in proto.graph.node]
    assert expected <= set(ops), ops
    if alt == 0:
        assert ops.count("Sum") == 1 and "Add" not in ops  # one 4-input Sum, not an Add chain
        assert ops.count("Dropout") == 1
    assert compare_with_torch(net, proto, (2, 6, 6)) < 1e-4


def test_relative_width_convs_are_fused_into_conv2d():
    from einnas.grammar import analyse, build_network, parse_arch

    grammar = load_grammar("resnet")
    arch = parse_arch(
        "sequential(sequential(sequential(routing[im2col(3,1,1), linear(16), col2im], sequential(norm, relu)), "
        "branching(2){clone(2), sequential(sequential(sequential(norm, relu), routing[im2col(3,1,1), linear_div(9), "
        "col2im]), sequential(sequential(norm, relu), routing[im2col(3,1,1), linear_div(9), col2im])), identity, sum}), "
        "global_avgpool)", grammar)
    net = build_network(arch, (3, 8, 8), 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 16), (16, 16), (16, 16)]
    assert not any(isinstance(m, nn.Unfold) for m in net.modules())
    unfused = build_network(arch, (3, 8, 8), 10, fuse=False)
    params = analyse(arch, (3, 8, 8), 10).params
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in unfused.parameters()) == params
    # the same function: copy the unfolded linear weights into the fused convolutions
    linears = [m for m in unfused.modules() if isinstance(m, nn.Linear)][:-1]
    with torch.no_grad():
        for conv, lin in zip(convs, linears):
            conv.weight.copy_(lin.weight.view_as(conv.weight))
            conv.bias.copy_(lin.bias)
        net.classifier.load_state_dict(unfused.classifier.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert F.mse_loss(net.eval()(x), unfused.eval()(x)) < 1e-10
