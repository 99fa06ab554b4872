"""Zero-cost proxies against hand computations; state, determinism, isolation; ONNX conversion; CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from einnas.cli import main
from einnas.errors import DatasetError, ModelError
from einnas.surrogate.proxies import (
    PROXY_NAMES, as_features, compute_proxies, dataset_batch, proxies_for_arch, proxies_for_onnx, synthetic_batch,
)
from einnas.surrogate.proxy_cache import ProxyCache, cache_key

SHAPE, HIDDEN, CLASSES, B = (1, 2, 3), 64, 4, 8


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES))


def hand_forward(x, w1, b1, w2, b2):
    h = x.reshape(x.shape[0], -1) @ w1.T + b1
    return h, torch.relu(h) @ w2.T + b2


def data():
    g = torch.Generator().manual_seed(5)
    return torch.randn(B, *SHAPE, generator=g), torch.randint(0, CLASSES, (B,), generator=g)


def weights(net):
    return [p.detach().clone().requires_grad_(True) for p in (net[1].weight, net[1].bias, net[3].weight, net[3].bias)]


def test_each_proxy_matches_a_hand_computation():
    net, (x, y) = mlp(), data()
    got = compute_proxies(net, SHAPE, CLASSES, batch=(x, y))
    ws = weights(net)
    # SNIP and grad-norm: cross-entropy gradients of the hand-written forward
    _, out = hand_forward(x, *ws)
    grads = torch.autograd.grad(F.cross_entropy(out, y), ws)
    ws = [w.detach() for w in ws]
    assert got["snip"] == pytest.approx(sum(float((w * g).abs().sum()) for w, g in zip(ws, grads)), rel=1e-5)
    assert got["grad_norm"] == pytest.approx(sum(math.sqrt(float((g * g).sum())) for g in grads), rel=1e-5)
    # synflow: |θ| in float64, all-ones input, R = Σ f(1), Σ θ ∂R/∂θ
    ab = [w.detach().double().abs().requires_grad_(True) for w in ws]
    _, r = hand_forward(torch.ones(1, *SHAPE, dtype=torch.float64), *ab)
    sgrads = torch.autograd.grad(r.sum(), ab)
    ab = [w.detach() for w in ab]
    assert got["synflow"] == pytest.approx(sum(float((w * g).sum()) for w, g in zip(ab, sgrads)), rel=1e-9)
    # NASWOT: sign codes of the ReLU's input
    h, _ = hand_forward(x, *ws)
    c = (h > 0).double()
    k = c @ c.T + (1 - c) @ (1 - c).T
    assert got["naswot"] == pytest.approx(float(np.linalg.slogdet(k.numpy())[1]), rel=1e-9)
    # jacov: per-sample Jacobians of the summed outputs w.r.t. the input
    xg = x.clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(hand_forward(xg, *ws)[1].sum(), xg)
    eig = np.linalg.eigvalsh(np.corrcoef(jac.reshape(B, -1).double().numpy()))
    assert got["jacov"] == pytest.approx(float(-np.sum(np.log(eig + 1e-5) + 1 / (eig + 1e-5))), rel=1e-6)
    # counts: parameters, and 2 FLOPs per multiply-add of the two linear layers
    assert got["params"] == 6 * HIDDEN + HIDDEN + HIDDEN * CLASSES + CLASSES
    assert got["flops"] == 2 * (6 * HIDDEN + HIDDEN * CLASSES)
    # early_fit: log K minus the cross-entropy after 7 Adam steps (lr 0.01) of the hand-written forward
    ws = weights(net)
    opt = torch.optim.Adam(ws, lr=0.01)
    for _ in range(7):
        opt.zero_grad()
        F.cross_entropy(hand_forward(x, *ws)[1], y).backward()
        opt.step()
    with torch.no_grad():
        after = float(F.cross_entropy(hand_forward(x, *ws)[1], y))
    assert got["early_fit"] == pytest.approx(math.log(CLASSES) - after, rel=1e-5)
    assert list(got) == list(PROXY_NAMES)


def test_early_fit_rewards_networks_that_fit_the_batch_fast():
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Flatten(), nn.Linear(6, 256), nn.ReLU(), nn.Linear(256, CLASSES))
    choked = nn.Sequential(nn.Flatten(), nn.Linear(6, 1), nn.ReLU(), nn.Linear(1, CLASSES))  # one unit wide
    fast, slow = (compute_proxies(n, SHAPE, CLASSES, names=("early_fit",))["early_fit"] for n in (wide, choked))
    assert fast > slow + 0.1
    # nothing to train: the figure is log K minus the loss as it is
    frozen = nn.Sequential(nn.Flatten(), nn.Linear(6, CLASSES))
    for p in frozen.parameters():
        p.requires_grad_(False)
    x, y = synthetic_batch(SHAPE, CLASSES, 32, 0)
    with torch.no_grad():
        loss = float(F.cross_entropy(frozen(x), y))
    assert compute_proxies(frozen, SHAPE, CLASSES, names=("early_fit",))["early_fit"] == pytest.approx(
        math.log(CLASSES) - loss, rel=1e-6)


def test_naswot_hooks_every_kind_of_activation_module():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 32), nn.GELU(), nn.Linear(32, 32), nn.LeakyReLU(0.1),
                        nn.Linear(32, CLASSES))
    x, y = data()
    got = compute_proxies(net, SHAPE, CLASSES, batch=(x, y), names=("naswot",))
    with torch.no_grad():
        h1 = net[1](net[0](x))
        h2 = net[3](F.gelu(h1))
    k = sum(c @ c.T + (1 - c) @ (1 - c).T for c in ((h1 > 0).double(), (h2 > 0).double()))
    assert got["naswot"] == pytest.approx(float(np.linalg.slogdet(k.numpy())[1]), rel=1e-9)
    bare = nn.Sequential(nn.Flatten(), nn.Linear(6, CLASSES))  # no activation at all: no codes
    assert math.isnan(compute_proxies(bare, SHAPE, CLASSES, names=("naswot",))["naswot"])
    narrow = nn.Sequential(nn.Flatten(), nn.ReLU())  # 6 code bits for 32 samples: K is singular
    assert math.isnan(compute_proxies(narrow, SHAPE, 6, names=("naswot",))["naswot"])


def test_deterministic_for_a_seed_and_seed_matters():
    a = compute_proxies(mlp(), SHAPE, CLASSES, seed=3)
    b = compute_proxies(mlp(), SHAPE, CLASSES, seed=3)
    c = compute_proxies(mlp(), SHAPE, CLASSES, seed=4)
    assert a == b
    assert a["snip"] != c["snip"]
    # the default data-free batch is the seeded synthetic one
    assert compute_proxies(mlp(), SHAPE, CLASSES, batch=synthetic_batch(SHAPE, CLASSES, 32, 3)) == a


def test_batch_path_differs_from_data_free_and_is_checked():
    net, (x, y) = mlp(), data()
    assert compute_proxies(net, SHAPE, CLASSES, batch=(x, y))["snip"] != compute_proxies(net, SHAPE, CLASSES)["snip"]
    with pytest.raises(DatasetError, match="do not fit"):
        compute_proxies(net, SHAPE, CLASSES, batch=(torch.randn(8, 3, 2, 1), y))
    with pytest.raises(DatasetError, match="labels outside"):
        compute_proxies(net, SHAPE, CLASSES, batch=(x, y + CLASSES))


def test_module_state_is_restored():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES))
    net.train()
    net[1].eval()  # a mixed mode must come back as it was
    net[0].weight.grad = torch.full_like(net[0].weight, 7.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    rng = torch.get_rng_state()
    for train_mode in (False, True):
        values = compute_proxies(net, (1, 5, 5), CLASSES, train_mode=train_mode)
        assert all(math.isfinite(values[n]) for n in ("snip", "grad_norm", "synflow", "naswot", "params", "early_fit"))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running stats
    assert [m.training for m in net.modules()] == modes
    assert torch.equal(net[0].weight.grad, torch.full_like(net[0].weight, 7.0))
    assert net[1].weight.grad is None
    assert torch.equal(torch.get_rng_state(), rng)


class NoDouble(nn.Module):
    """Fails in float64 (synflow) and cuts the input from the graph (jacov)."""

    def __init__(self):
        super().__init__()
        self.lin, self.act = nn.Linear(6, 64), nn.ReLU()
        self.out = nn.Linear(64, CLASSES)

    def forward(self, x):
        if x.dtype == torch.float64:
            raise RuntimeError("no float64 here")
        return self.out(self.act(self.lin(x.detach().reshape(x.shape[0], -1))))


def test_a_failing_proxy_does_not_lose_the_others():
    got = compute_proxies(NoDouble(), SHAPE, CLASSES)
    assert math.isnan(got["synflow"]) and math.isnan(got["jacov"])
    assert all(math.isfinite(got[n]) for n in ("snip", "grad_norm", "naswot", "params", "flops"))


def test_infinite_values_become_nan():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), *[m for _ in range(40) for m in (nn.Linear(6, 6), nn.ReLU())], nn.Linear(6, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1e9)  # synflow in float64 overflows to inf
    got = compute_proxies(net, SHAPE, 2, names=("synflow", "params"))
    assert math.isnan(got["synflow"]) and got["params"] > 0


def test_as_features_log_scales_wide_ranges():
    f = as_features({"snip": 999.0, "synflow": -9.0, "naswot": 5.0, "params": math.nan})
    assert f["snip"] == pytest.approx(3.0) and f["synflow"] == pytest.approx(-1.0)
    assert f["naswot"] == 5.0 and math.isnan(f["params"])


# --- architectures and the cache -----------------------------------------------------

ARCH = "sequential(routing[im2col(3,1,1), linear(16), col2im], sequential(norm, leakyrelu))"
TOKEN_ARCH = "sequential(routing[im2col(4,4,0), sequential(pos_enc, linear(16)), permute(2,1)], sequential(norm, leakyrelu))"


def test_proxies_for_arch_is_seeded_and_cached(tmp_path, monkeypatch):
    a = proxies_for_arch(ARCH, (3, 8, 8), 5, seed=1, cache=tmp_path)
    assert proxies_for_arch(ARCH, (3, 8, 8), 5, seed=1) == a
    assert proxies_for_arch(ARCH, (3, 8, 8), 5, seed=2)["snip"] != a["snip"]
    import einnas.surrogate.proxies as module

    monkeypatch.setattr(module, "compute_proxies", lambda *a, **k: pytest.fail("recomputed a cached entry"))
    assert proxies_for_arch(ARCH, (3, 8, 8), 5, seed=1, cache=tmp_path) == a


def test_cache_round_trip_nan_and_corrupt_files(tmp_path):
    cache = ProxyCache(tmp_path)
    key = cache_key("abc", (3, 8, 8), 5, 0)
    assert key != cache_key("abc", (3, 8, 8), 5, 1) != cache_key("abc", (3, 8, 8), 5, 0, batch=data())
    cache.put(key, {"snip": 1.5, "naswot": math.nan})
    got = cache.get(key)
    assert got["snip"] == 1.5 and math.isnan(got["naswot"])
    path = next(tmp_path.rglob(f"{key}.json"))
    path.write_text("{not json")
    assert cache.get(key) is None


# --- ONNX ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from einnas.grammar.export import export_onnx
    from einnas.surrogate.proxies import build_seeded

    module = build_seeded(TOKEN_ARCH, (3, 8, 8), 5, seed=0)
    path = tmp_path_factory.mktemp("onnx") / "tokens.onnx"
    export_onnx(module, (3, 8, 8), 5, path)
    return module, path


def test_exported_onnx_gives_the_torch_modules_proxies(exported):
    module, path = exported
    want = compute_proxies(module, (3, 8, 8), 5)
    result = proxies_for_onnx(path, reinit=False)
    assert result.converted and result.note is None and result.batch_mode == "dynamic"
    assert result.input_shape == (3, 8, 8) and result.num_classes == 5
    for name in PROXY_NAMES:
        assert result.values[name] == pytest.approx(want[name], rel=1e-4), name
    fresh = proxies_for_onnx(path, seed=0)  # re-initialised: other weights, same parameter count
    assert fresh.values["params"] == want["params"] and fresh.values["snip"] != result.values["snip"]


def _tiny_onnx(op="Relu", domain="", fixed_batch=True, reshape_const_node=False):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    batch = 1 if fixed_batch else "N"
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((3, 12)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 12], np.int64), "shape")]
    nodes = []
    if reshape_const_node:  # a shape the batch rewrite cannot see: per-sample fallback
        nodes.append(helper.make_node("Constant", [], ["shape_c"], value=numpy_helper.from_array(
            np.array([1, 12], np.int64))))
    nodes += [helper.make_node(op, ["x"], ["a"], domain=domain),
              helper.make_node("Reshape", ["a", "shape_c" if reshape_const_node else "shape"], ["f"]),
              helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1),
              helper.make_node("Softmax", ["logits"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_a_fixed_batch_file_is_made_batchable():
    from einnas.surrogate.convert import convert_onnx

    model = _tiny_onnx()
    conv = convert_onnx(model)
    assert conv.batch == "patched" and conv.num_classes == 3
    x = torch.randn(4, 3, 2, 2)
    from onnx import numpy_helper

    w = torch.tensor(numpy_helper.to_array(model.graph.initializer[0]))
    with torch.no_grad():  # the trailing Softmax is cut: logits
        assert torch.allclose(conv.module(x), torch.relu(x).reshape(4, 12) @ w.T, atol=1e-5)
    per = convert_onnx(_tiny_onnx(reshape_const_node=True))
    assert per.batch == "per-sample"
    with torch.no_grad():
        assert torch.allclose(per.module(x), torch.relu(x).reshape(4, 12) @ w.T, atol=1e-5)
    result = proxies_for_onnx(_tiny_onnx(reshape_const_node=True), reinit=False)
    assert result.converted and "sample by sample" in result.note and math.isfinite(result.values["snip"])


def test_a_file_that_cannot_be_converted_is_scored_without_proxies():
    result = proxies_for_onnx(_tiny_onnx(op="Frobnicate", domain="com.example"))
    assert not result.converted
    assert result.note.startswith("not converted to torch: ") and "scored without gradient proxies" in result.note
    assert "\n" not in result.note
    assert result.values["params"] == 36  # the weights, counted from the file
    assert all(math.isnan(result.values[n]) for n in PROXY_NAMES if n != "params")


def test_naswot_runs_in_onnxruntime_when_torch_cannot():
    from onnx import helper

    model = _tiny_onnx()
    # an AveragePool with asymmetric padding: onnx2torch 1.5 refuses it, onnxruntime runs it
    pool = helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2], pads=[0, 0, 1, 1])
    model.graph.node.insert(0, pool)
    model.graph.node[1].input[0] = "p"
    result = proxies_for_onnx(model, batch_size=8)
    assert not result.converted and "not converted to torch" in result.note
    x, _ = synthetic_batch((3, 2, 2), 2, 8, 0)
    h = F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2, stride=1)  # the Relu's input, up to a positive factor
    c = (h.reshape(8, -1) > 0).double()
    k = c @ c.T + (1 - c) @ (1 - c).T
    assert result.values["naswot"] == pytest.approx(float(np.linalg.slogdet(k.numpy())[1]), rel=1e-9)
    assert math.isnan(result.values["snip"])


def test_hostile_or_broken_files_are_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx model")
    with pytest.raises(ModelError):
        proxies_for_onnx(bad)


def test_light_zoo_file_with_constant_of_shape_weights_converts():
    import os

    import onnx

    path = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_squeezenet.onnx")
    if not os.path.exists(path):
        pytest.skip("this onnx build ships no light model zoo")
    result = proxies_for_onnx(path, batch_size=2, names=("naswot", "params"))
    assert result.converted and result.num_classes == 1000 and result.input_shape == (3, 224, 224)
    assert result.values["params"] > 1e6 and math.isfinite(result.values["naswot"])


# --- CLI ----------------------------------------------------------------------------


def test_cli_json_for_an_architecture_and_a_dataset(capsys):
    assert main(["proxies", ARCH, "--input-shape", "3,8,8", "--classes", "5", "-f", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["snip"] == pytest.approx(proxies_for_arch(ARCH, (3, 8, 8), 5)["snip"])
    assert main(["proxies", ARCH, "--dataset", "digits", "-f", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    from einnas.evaluate import load_dataset

    want = proxies_for_arch(ARCH, (1, 8, 8), 10, batch=dataset_batch(load_dataset("digits"), 32, 0))
    assert row["snip"] == pytest.approx(want["snip"])


@pytest.mark.parametrize("argv, fragment", [
    (["proxies", "sequential(linear(16)"], "architecture string"),
    (["proxies", "missing.onnx"], "missing.onnx: no such file"),
    (["proxies", ARCH, "--input-shape", "3,x"], "--input-shape"),
    (["proxies", ARCH, "--dataset", "nonesuch"], "unknown dataset"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err and "Traceback" not in err


def test_cli_dataset_that_does_not_fit_the_file(exported, capsys):
    _, path = exported
    assert main(["proxies", str(path), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "digits" in err and "3,8,8" in err


def test_same_values_in_a_fresh_process(exported):
    _, path = exported
    code = ("import json; from einnas.surrogate.proxies import proxies_for_onnx as p; "
            f"print(json.dumps(p({str(path)!r}, seed=3).values))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = proxies_for_onnx(path, seed=3).values
    # float32 sums may differ in their last bits with the thread count (another test may have set it);
    # early_fit is log K minus a float32 loss after 7 steps: equal to that loss's precision
    there = json.loads(out)
    assert there["early_fit"] == pytest.approx(here["early_fit"], abs=1e-5)
    del there["early_fit"], here["early_fit"]
    assert there == pytest.approx(here, rel=1e-6) and here["snip"] > 0


def test_conversion_works_beside_a_broken_torchvision(tmp_path, exported):
    # PyPI's torchvision wheel is built for CUDA torch and fails at import beside CPU
    # torch; onnx2torch imports it. The converter must work all the same.
    fake = tmp_path / "fake" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    _, path = exported
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from einnas.surrogate.convert import convert_onnx; "
            "c = convert_onnx(sys.argv[2]); print(c.batch, c.num_classes, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "fake"), str(path)], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["dynamic", "5", "False"]


def test_feature_cache_computes_only_the_proxies_a_cached_file_lacks(tmp_path, monkeypatch):
    from einnas.surrogate import proxyfeatures

    arch, shape = "sequential(linear(16), leakyrelu)", (3, 8, 8)
    full = proxyfeatures.ProxyCache(tmp_path).get("a1", arch, shape, 5)
    assert set(full) == set(proxyfeatures._names()) and math.isfinite(full["early_fit"])
    # a file written before early_fit existed: the old values stay, only the new one is computed
    (path,) = (tmp_path / f"proxies-v{proxyfeatures.CACHE_VERSION}").glob("*.json")
    old = {k: v for k, v in full.items() if k != "early_fit"} | {"snip": 123.0}
    path.write_text(json.dumps({"values": old}))
    asked = []
    real = proxyfeatures.compute_arch
    monkeypatch.setattr(proxyfeatures, "compute_arch", lambda *a, **k: asked.append(k["names"]) or real(*a, **k))
    got = proxyfeatures.ProxyCache(tmp_path).get("a1", arch, shape, 5)
    assert asked == [("early_fit",)]
    assert got["snip"] == 123.0 and got["early_fit"] == pytest.approx(full["early_fit"])
    assert json.loads(path.read_text())["values"] == got  # written back merged
    proxyfeatures.ProxyCache(tmp_path).get("a1", arch, shape, 5)
    assert asked == [("early_fit",)]  # complete now: nothing computed
