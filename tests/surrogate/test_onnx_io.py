"""Safe loading of untrusted ONNX files: every hostile input is one ModelError line."""

from __future__ import annotations

import builtins
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from einnas.cli import main
from einnas.errors import ModelError
from einnas.surrogate import onnx_io
from einnas.surrogate.describe import describe
from einnas.surrogate.onnx_io import LoadLimits, read_model


def tiny_model(weight=None, dims=(2, 4)) -> onnx.ModelProto:
    """y = x @ W with W an initializer."""
    weight = np.arange(8, dtype=np.float32).reshape(dims) if weight is None else weight
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dims[1]])],
        [numpy_helper.from_array(weight, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def external(model: onnx.ModelProto, location: str, offset: int = 0, length: int | None = None) -> onnx.ModelProto:
    """Point initializer W at external data ``location``."""
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        w.external_data.add(key=key, value=value)
    return model


def write(path, model) -> str:
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_reads_a_valid_model_from_path_bytes_and_proto(tmp_path):
    model = tiny_model()
    path = write(tmp_path / "m.onnx", model)
    for source in (path, model.SerializeToString(), model):
        assert read_model(source).graph.node[0].op_type == "MatMul"


@pytest.mark.parametrize("content, why", [
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not an ONNX model"),
    (b"", "no graph"),
    (b"\x08\x07", "no graph"),  # a valid protobuf with an ir_version only
])
def test_garbage_is_a_model_error(tmp_path, content, why):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=why):
        read_model(path)


def test_truncated_model_is_a_model_error(tmp_path):
    data = tiny_model(np.ones((64, 64), np.float32), (64, 64)).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        describe(path)


def test_missing_file_folder_and_size_limit(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        read_model(tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="not a file"):
        read_model(tmp_path)
    path = write(tmp_path / "m.onnx", tiny_model())
    with pytest.raises(ModelError, match="over the limit"):
        read_model(path, limits=LoadLimits(max_bytes=50))


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin", "C:\\x.bin", ""])
def test_external_data_outside_the_folder_is_refused_and_not_read(tmp_path, monkeypatch, location):
    folder = tmp_path / "models"
    folder.mkdir()
    path = write(folder / "m.onnx", external(tiny_model(), location))
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(onnx_io, "open", lambda f, *a, **k: opened.append(os.fspath(f)) or real_open(f, *a, **k),
                        raising=False)
    for load in (False, True):
        with pytest.raises(ModelError, match="outside the model's folder"):
            read_model(path, load_external=load)
    assert opened == [path, path]  # the model itself, nothing else


def test_symlink_leading_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 32)
    os.symlink(tmp_path / "secret.bin", folder / "w.bin")
    path = write(folder / "m.onnx", external(tiny_model(), "w.bin"))
    with pytest.raises(ModelError, match="leads outside"):
        read_model(path, load_external=True)


def test_external_data_inside_the_folder_loads_only_when_asked(tmp_path):
    weight = np.arange(8, dtype=np.float32).reshape(2, 4) * 3
    (tmp_path / "w.bin").write_bytes(b"pad!" + weight.tobytes())
    path = write(tmp_path / "m.onnx", external(tiny_model(), "w.bin", offset=4, length=32))
    lazy = read_model(path)
    assert lazy.graph.initializer[0].data_location == TensorProto.EXTERNAL
    loaded = read_model(path, load_external=True)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), weight)
    assert describe(path).summary.params == 8  # described without reading the data


def test_external_data_range_beyond_the_file(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    path = write(tmp_path / "m.onnx", external(tiny_model(), "w.bin", offset=8, length=32))
    with pytest.raises(ModelError, match="outside 'w.bin'"):
        read_model(path, load_external=True)


def test_absurd_dimensions_and_node_limit():
    model = tiny_model()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 10**13
    with pytest.raises(ModelError, match="absurd dimension"):
        read_model(model)
    model = tiny_model()
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend([2**21, 2**21])
    with pytest.raises(ModelError, match="elements"):
        read_model(model)
    with pytest.raises(ModelError, match="more than 0 nodes"):
        read_model(tiny_model(), limits=LoadLimits(max_nodes=0))


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    hostile = write(tmp_path / "h.onnx", external(tiny_model(), "../../etc/passwd"))
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(os.urandom(2000))
    for path in (hostile, str(noise), str(tmp_path / "absent.onnx")):
        assert main(["describe", path]) == 2
        err = capsys.readouterr().err
        assert err.startswith("einnas describe: error: ") and err.count("\n") == 1, err


def test_empty_graph_is_refused_not_scored(tmp_path, capsys):
    graph = helper.make_graph([], "empty", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])])
    no_nodes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    no_outputs = tiny_model()
    no_outputs.graph.ClearField("output")
    for proto, what in ((no_nodes, "no nodes"), (no_outputs, "no outputs")):
        with pytest.raises(ModelError, match=f"the graph has {what}"):
            read_model(proto)
        path = tmp_path / "empty.onnx"
        path.write_bytes(proto.SerializeToString())
        assert main(["score", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{path}: the graph has {what}" in err and "1.0000" not in capsys.readouterr().out


def test_initializer_claiming_more_elements_than_its_data_is_refused():
    lying = tiny_model()
    w = lying.graph.initializer[0]
    w.ClearField("dims")
    w.dims.extend([2_000_000_000, 2])  # 4e9 elements claimed, 32 bytes held
    with pytest.raises(ModelError, match=r"initializer 'W' claims 4,000,000,000 elements .* holds 32 bytes"):
        read_model(lying)
    typed = tiny_model()
    t = typed.graph.initializer[0]
    t.float_data.extend(np.frombuffer(t.raw_data, np.float32).tolist()[:5])
    t.ClearField("raw_data")
    with pytest.raises(ModelError, match="claims 8 elements but holds data for 5"):
        read_model(typed)
    assert describe(tiny_model()).summary.params == 8  # an honest one is described
