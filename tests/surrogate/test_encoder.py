"""The text encoder: compact segments, windows (never cut), runtimes, caches."""

from __future__ import annotations

import numpy as np
import pytest

from einnas.surrogate.encoder import (
    DIM, WINDOW, TextEncoder, VectorStore, compact_line, segments, text_key,
)

RESNET_LIKE = """einnas-onnx v1 params=11.2M macs=150M depth=45 nodes=48
x = input Nx3x32x32
t1 = Conv(x, kernel_shape=3, pads=1) #1.79k Nx64x32x32 > LeakyRelu
2x[
  t2 = Conv(t1, kernel_shape=3, pads=1) #36.9k > LeakyRelu > Conv(kernel_shape=3, pads=1) #36.9k
  t3 = Add(t2, t1) > LeakyRelu
]
t4 = Conv(t3, kernel_shape=3, pads=1) #36.9k > LeakyRelu > Conv(kernel_shape=3, pads=1) #36.9k
y = Add(t4, t3) > LeakyRelu > ReduceMean(axes=[2,3], keepdims=0) Nx512 > Gemm(transB=1) #5.13k Nx10
"""


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """One loaded ONNX Runtime encoder for the module (the model export happens once per machine)."""
    return TextEncoder(store=tmp_path_factory.mktemp("enc")).load()


def test_compact_line_drops_names_params_and_shapes():
    line = "t2 = Conv(t1, kernel_shape=3, pads=1) #36.9k Nx64x16x16 > LeakyRelu > Conv(kernel_shape=3) #36.9k"
    assert compact_line(line) == "Conv(t, kernel_shape=3, pads=1) > LeakyRelu > Conv(kernel_shape=3)"
    assert compact_line("t3 = Add(t2, t1) > LeakyRelu") == "Add(2 inputs) > LeakyRelu"
    assert compact_line("x = input Nx3x32x32") == "input 3x32x32"
    assert compact_line("t6 = Concat(t3..t5, t2, axis=2) Nx2x4x2048") == "Concat(4 inputs, axis=2)"
    assert compact_line("t1..t4 = 4x Transpose(x, perm=[0,2,1]) > MatMul #64") == "Transpose(t) > MatMul"


def test_segments_merge_repeats_and_weight_blocks():
    segs = dict(segments(RESNET_LIKE))
    assert "einnas-onnx" not in " ".join(segs)  # the header's figures are numeric features
    assert segs["input 3x32x32"] == 1
    assert segs["Conv(t, kernel_shape=3, pads=1) > LeakyRelu > Conv(kernel_shape=3, pads=1)"] == 3  # 2x block + 1
    assert segs["Add(2 inputs) > LeakyRelu"] == 2
    assert sum(segs.values()) == 8  # input, stem, 2x(2 lines), conv line, output line


def test_embeddings_are_normalised_and_sensible(encoder):
    v = encoder.embed_segments(["The cat sits on the mat.", "A cat is sitting on a rug.", "Quarterly revenue rose by 5%."])
    assert v.shape == (3, DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] == pytest.approx(0.769, abs=0.01)  # the model card's sanity values
    assert abs(v[0] @ v[2]) < 0.05


def test_long_text_is_windowed_not_cut(encoder):
    long = " ".join(f"Conv{i} > Relu" for i in range(400))  # far beyond 256 tokens
    before = dict(encoder.stats)
    head = encoder.embed_segments([long])[0]
    assert encoder.stats["windows"] - before["windows"] >= 3
    assert encoder.stats["tokens"] - before["tokens"] > 2 * WINDOW
    # the tail of the text changes the vector: nothing was cut
    other = encoder.embed_segments([long + " > Softmax > Sigmoid > Tanh > Gelu " * 40])[0]
    assert float(head @ other) < 0.9999


def test_cache_avoids_recomputing(encoder, tmp_path):
    texts = ["MatMul(t) > Add", "Conv(t, kernel_shape=3) > Relu"]
    first = encoder.embed_segments(texts)
    embedded = encoder.stats["embedded"]
    again = encoder.embed_segments(list(reversed(texts)))
    assert encoder.stats["embedded"] == embedded
    np.testing.assert_array_equal(first[::-1], again)
    # a new encoder on the same store reads the vectors back from disk
    fresh = TextEncoder(store=encoder.store.folder.parent)
    np.testing.assert_allclose(fresh.embed_segments(texts), first, atol=1e-6)
    assert fresh.stats["embedded"] == 0


def test_encode_many_pools_segments(encoder):
    one = encoder.encode(RESNET_LIKE)
    both = encoder.encode_many([RESNET_LIKE, "x = input Nx1x8x8\ny = MatMul(x) #2.05k > Add > Gemm(transB=1) Nx10"])
    np.testing.assert_allclose(both[0], one, atol=1e-6)
    assert not np.allclose(both[0], both[1])
    assert encoder.encode_many([""]).shape == (1, DIM)


def test_onnx_runtime_matches_sentence_transformers(encoder):
    # sentence-transformers comes with the test extra: a failing import is a failure, not a skip
    texts = ["Conv(t, kernel_shape=3, pads=1) > LeakyRelu", "input 1x8x8", "Add(t, t) > LayerNormalization"]
    reference = TextEncoder(runtime="torch").embed_segments(texts)
    np.testing.assert_allclose(encoder.embed_segments(texts), reference, atol=1e-4)


def test_vector_store_roundtrip_without_pickle(tmp_path):
    store = VectorStore(tmp_path / "s", 4)
    store.put({"a": np.arange(4.0), "b": np.ones(4)})
    store.put({"c": np.zeros(4)})
    reread = VectorStore(tmp_path / "s", 4)
    got = reread.get(["a", "c", "missing"])
    assert set(got) == {"a", "c"} and len(reread) == 3
    np.testing.assert_array_equal(got["a"], np.arange(4.0))
    for path in (tmp_path / "s").glob("*.npy"):
        np.load(path, allow_pickle=False)  # plain arrays
    (tmp_path / "s" / "junk.json").write_text("[\"x\"]")  # a shard without its array is ignored
    assert len(VectorStore(tmp_path / "s", 4)) == 3


def test_text_key_depends_on_text():
    assert text_key("a") != text_key("b") and text_key("a") == text_key("a")


def test_unknown_runtime_is_a_usage_error():
    from einnas.errors import UsageError

    with pytest.raises(UsageError):
        TextEncoder(runtime="tensorflow")
