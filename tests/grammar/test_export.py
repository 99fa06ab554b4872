"""ONNX export: checked, self-contained, dynamic batch, equal to torch (onnxruntime)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from einnas.cli import main
from einnas.errors import ArchitectureError, UsageError
from einnas.grammar.export import OPSET, compare_with_torch, export_onnx


class EinspaceOps(nn.Module):
    """The ops einspace networks use: conv, BN, leaky relu, im2col, linear on the last axis,
    LayerNorm, matmul attention, softmax, permute/reshape, split/chunk, cat, mean pooling."""

    def __init__(self, classes=5):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.patch = nn.Linear(8 * 4, 8)
        self.ln = nn.LayerNorm(8)
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = F.leaky_relu(self.bn(self.conv(x)), 0.1)                     # B, 8, 8, 8
        patches = self.patch(F.unfold(x, kernel_size=2, stride=2).transpose(1, 2))  # B, 16, 8
        t = self.ln(x.flatten(2).permute(0, 2, 1))                          # B, 64, 8
        attn = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2) / 8 ** 0.5, dim=-1) @ self.v(t)
        a, b = attn.chunk(2, dim=-1)
        c, d = torch.split(t, 4, dim=-1)
        t = torch.cat([b, a], -1) + torch.cat([c, d], -1)
        t = t.reshape(t.shape[0], 8, 8, 8).mean((1, 2))                     # B, 8
        return self.head(torch.cat([t, patches.mean(1)], -1))


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_export_matches_torch_on_einspace_ops(tmp_path):
    torch.manual_seed(0)
    net = EinspaceOps()
    net.bn.running_mean.uniform_(-1, 1)  # "trained" statistics must be exported, not reset
    path = tmp_path / "net.onnx"
    model = export_onnx(net, (3, 8, 8), 5, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert os.listdir(tmp_path) == ["net.onnx"]  # one self-contained file, no sidecar, no temp left
    assert model.opset_import[0].version == OPSET >= 18
    for batch in (1, 3):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            expected = net.eval()(x).numpy()
        got = ort_run(model, x.numpy())
        assert got.shape == (batch, 5)
        assert np.abs(got - expected).max() < 1e-4
    assert compare_with_torch(net, model, (3, 8, 8)) < 1e-4


def test_dynamic_batch_inferred_shapes_and_metadata(tmp_path):
    model = export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), (3, 4), 4, metadata={"accuracy": 0.5})
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 4]
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    intermediate = {o for n in model.graph.node for o in n.output} - {"y"}
    assert intermediate <= {v.name for v in model.graph.value_info}  # every intermediate has a shape
    props = {p.key: p.value for p in model.metadata_props}
    assert props["input_shape"] == "3,4" and props["accuracy"] == "0.5"


def test_export_is_quiet_and_restores_training_mode(capfd):
    net = nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.Linear(6, 2)).train()
    threads = torch.get_num_threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = export_onnx(net, (6,), 2)
    assert caught == []
    assert capfd.readouterr() == ("", "")
    assert net.training and torch.get_num_threads() == threads
    assert "Dropout" not in {n.op_type for n in model.graph.node}  # exported in eval mode


class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("shapes do not match\nsecond line")


def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"old")
    with pytest.raises(ArchitectureError, match="shapes do not match$"):
        export_onnx(Broken(), (3,), 2, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.onnx"]
    with pytest.raises(UsageError, match="does not exist"):
        export_onnx(nn.Linear(3, 2), (3,), 2, tmp_path / "missing" / "out.onnx")
    with pytest.raises(UsageError):
        export_onnx(nn.Linear(3, 2), (3,), 2, exporter="magic")


def sampled_and_seeds(n=12):
    from einnas.grammar import SEED_NAMES, default_grammar, resolve_arch, sample

    archs = sample(default_grammar(), n, seed=3, input_shape=(3, 32, 32), num_classes=10)
    return archs + [resolve_arch(name) for name in SEED_NAMES]


def test_sampled_architectures_and_seeds_export_and_match_torch():
    from einnas.grammar import build_network

    archs = sampled_and_seeds()
    assert len(archs) == 16
    for arch in archs:
        net = build_network(arch, (3, 32, 32), 10)
        model = export_onnx(net, (3, 32, 32), 10)
        onnx.checker.check_model(model)
        diff = compare_with_torch(net, model, (3, 32, 32), batch_sizes=(1, 3), seed=1)
        assert diff < 1e-4, (diff, arch.string)


def test_architecture_metadata_and_cli(tmp_path, capsys):
    arch = "sequential(linear(64), linear(32))"
    model = export_onnx(arch, (5, 4), 3)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["arch"] == arch and len(props["archid"]) == 12
    out = tmp_path / "m.onnx"
    assert main(["export", arch, "-o", str(out), "--input-shape", "5,4", "--classes", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert ort_run(onnx.load(str(out)), np.zeros((2, 5, 4), np.float32)).shape == (2, 3)
    assert main(["export", "sequential(nonsense", "-o", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.startswith("einnas export: error:")
    assert not (tmp_path / "x.onnx").exists()


ARCH = "sequential(linear(64), linear(32))"


def _export_cli(out, *extra):
    return main(["export", ARCH, "-o", str(out), "--input-shape", "5,4", "--classes", "3", *extra])


def test_export_never_destroys_a_file_it_did_not_write(tmp_path, capsys):
    precious = tmp_path / "precious.txt"
    precious.write_text("my notes\n")
    for extra in ((), ("--force",)):
        assert _export_cli(precious, *extra) == 2
        err = capsys.readouterr().err
        assert "is not an ONNX file" in err and err.count("\n") == 1
    assert precious.read_text() == "my notes\n"
    out = tmp_path / "m.onnx"
    assert _export_cli(out) == 0
    first = out.read_bytes()
    out.write_bytes(first)  # an earlier output of the same kind ...
    assert _export_cli(out) == 2 and "give --force" in capsys.readouterr().err
    assert _export_cli(out, "--force") == 0  # ... is replaced when asked
    assert main(["export", ARCH, "--output", str(out), "--input-shape", "5,4", "--force"]) == 0  # old spelling


@pytest.mark.parametrize("bad, message", [
    ("", "expected a file name"), (".", "is a folder"), ("/proc/x.onnx", "cannot write in '/proc'"),
    ("missing/x.onnx", "does not exist"),
])
def test_export_bad_output_path_is_one_line(bad, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _export_cli(bad) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_written_files_respect_the_umask(tmp_path):
    from einnas._util import write_atomic

    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.bin", b"x")
        export_onnx(nn.Linear(3, 2), (3,), 2, tmp_path / "b.onnx")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.onnx").stat().st_mode & 0o777 == 0o640
