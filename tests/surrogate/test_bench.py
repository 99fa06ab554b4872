"""Benchmark records: append-only file, claims, resume, several workers; the ONNX-folder reader."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from einnas.errors import ModelError, UsageError
from einnas.surrogate.bench import BenchConfig, append_record, build, build_worker, read_records, slot_seed
from einnas.surrogate.onnxbench import read_folder

# Tiny networks and one epoch: each record trains in well under a second.
TINY = dict(dataset="digits", epochs=1, seconds=20, max_params=3000, max_activations=3000, threads=1)


def config(tmp_path, n, seed=0, **kw) -> BenchConfig:
    return BenchConfig(n=n, seed=seed, out=str(tmp_path / "records.jsonl"), command="einnas bench build (test)",
                       **{**TINY, **kw})


def test_slot_seed_is_stable_and_distinct():
    assert slot_seed(0, 5) == slot_seed(0, 5)
    assert len({slot_seed(0, i) for i in range(200)} | {slot_seed(1, 0)}) == 201


def test_build_writes_one_complete_record_per_slot(tmp_path):
    summary = build(config(tmp_path, 4), quiet=True)
    records = read_records(tmp_path / "records.jsonl")
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3] and summary["records"] == 4
    for r in records:
        assert r["dataset"] == "digits" and r["budget"]["epochs"] == 1 and r["seed"] == slot_seed(0, r["index"])
        assert r["origin"] == "sample" and r["parent"] is None  # too few good records to mutate yet
        assert r["ok"] == (r["val_acc"] is not None) and (r["ok"] or r["reason"])
        assert r["run"]["command"] == "einnas bench build (test)" and r["run"]["torch"] and r["run"]["date"]
        assert len(r["archid"]) == 12 and r["params"] <= 3000


def test_resume_and_extend_only_fill_missing_slots(tmp_path):
    build_worker(config(tmp_path, 3), max_records=2)
    assert len(read_records(tmp_path / "records.jsonl")) == 2
    build(config(tmp_path, 5), quiet=True)  # resumes slot 2, then extends to 5
    indices = sorted(r["index"] for r in read_records(tmp_path / "records.jsonl"))
    assert indices == [0, 1, 2, 3, 4]


def test_two_workers_never_train_the_same_slot(tmp_path):
    cfg = config(tmp_path, 6)
    threads = [threading.Thread(target=build_worker, args=(cfg,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    indices = [r["index"] for r in read_records(tmp_path / "records.jsonl")]
    assert sorted(indices) == list(range(6))


def test_a_dead_workers_claim_is_redone(tmp_path):
    out = tmp_path / "records.jsonl"
    claim = {"index": 0, "dataset": "digits", "bench_seed": 0, "pid": 2**22 + 12345,  # no such process
             "host": socket.gethostname(), "time": time.time()}
    (tmp_path / "records.jsonl.claims").write_text(json.dumps(claim) + "\n")
    live = dict(claim, index=1, pid=os.getpid())  # this process: alive, so slot 1 is left alone
    with open(tmp_path / "records.jsonl.claims", "a") as handle:
        handle.write(json.dumps(live) + "\n")
    build_worker(config(tmp_path, 2))
    assert [r["index"] for r in read_records(out)] == [0]


def test_torn_last_line_is_skipped_and_repaired(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"arch": "a", "archid": "x", "index": 0}\n{"arch": "b", "arch')  # killed mid-write
    append_record(out, {"arch": "c", "archid": "y", "index": 1})
    assert [r["archid"] for r in read_records(out)] == ["x", "y"]


def test_mutations_of_good_records_name_their_parent(tmp_path):
    out = tmp_path / "records.jsonl"
    from einnas.grammar import Limits, load_grammar, sample

    good = sample(load_grammar(), 6, seed=1, input_shape=(1, 8, 8), limits=Limits(max_params=3000, max_activations=3000))
    for i, arch in enumerate(good):  # pretend an earlier build trained these well
        append_record(out, {"arch": arch.string, "archid": arch.archid, "dataset": "digits", "ok": True,
                            "val_acc": 0.5 + i / 100, "index": 1000 + i, "bench_seed": 9})
    build(config(tmp_path, 8, mutate_fraction=1.0), quiet=True)
    mine = [r for r in read_records(out) if r.get("bench_seed") == 0]
    assert len(mine) == 8 and all(r["origin"] == "mutation" for r in mine)
    assert {r["parent"] for r in mine} <= {a.archid for a in good} | {r["archid"] for r in mine}


def test_bad_options_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        build(config(tmp_path, 2, mutate_fraction=2.0))
    with pytest.raises(UsageError):
        build(BenchConfig(dataset="digits", n=1, out=str(tmp_path / "no" / "such" / "dir.jsonl")))
    with pytest.raises(UsageError):
        read_records(tmp_path / "missing.jsonl")


def test_cli_bench_build_bad_dataset_exits_2(tmp_path, capsys):
    from einnas.cli import main

    assert main(["bench", "build", "--dataset", "nope", "--n", "1", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "einnas bench build: error:" in capsys.readouterr().err


# --- ONNX-Bench-style folders -------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory):
    from einnas.grammar.export import export_onnx

    root = tmp_path_factory.mktemp("onnxbench")
    (root / "space_a").mkdir()
    (root / "space_b").mkdir()
    archs = ["sequential(linear(16), linear(32))", "sequential(linear(32), norm)", "sequential(linear(16), norm)"]
    for i, arch in enumerate(archs):
        export_onnx(arch, (1, 8, 8), 10, root / "space_a" / f"{i}.onnx", metadata={"accuracy": str(80.0 + i)})
    export_onnx("sequential(linear(64), linear(16))", (1, 8, 8), 10, root / "space_b" / "0.onnx", metadata={"accuracy": "55.5"})
    return root


def test_reads_accuracy_from_metadata_props_in_percent(onnx_folder):
    records = read_folder(onnx_folder, prefix="bench")
    assert len(records) == 4
    by_group = {}
    for r in records:
        by_group.setdefault(r["dataset"], []).append(r["val_acc"])
        assert r["ok"] and r["archid"].startswith("onnx-") and os.path.isfile(r["onnx"])
    assert sorted(by_group) == ["bench/space_a", "bench/space_b"]
    assert sorted(by_group["bench/space_a"]) == pytest.approx([0.80, 0.81, 0.82])
    with pytest.raises(ModelError, match="above 1"):  # 10 classes read as a fraction is no accuracy
        read_folder(onnx_folder, scale="fraction", key="num_classes")


def test_first_entry_is_the_label_when_no_known_key(tmp_path):
    from einnas.grammar.export import export_onnx

    export_onnx("sequential(linear(16), linear(16))", (1, 8, 8), 10, tmp_path / "a.onnx")  # first entry: input_shape "1,8,8"
    with pytest.raises(ModelError, match="a.onnx"):
        read_folder(tmp_path)
    [record] = read_folder(tmp_path, key="num_classes", scale="percent")
    assert record["val_acc"] == pytest.approx(0.10)


def test_bad_files_name_the_file_or_are_skipped(onnx_folder, tmp_path):
    import shutil

    shutil.copytree(onnx_folder, tmp_path / "copy")
    (tmp_path / "copy" / "space_a" / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="bad.onnx"):
        read_folder(tmp_path / "copy")
    lines = []
    assert len(read_folder(tmp_path / "copy", skip_bad=True, log=lines.append)) == 4
    assert "skipped 1" in lines[0]
    with pytest.raises(UsageError):
        read_folder(tmp_path / "nothing-here")


def test_surrogate_fit_accepts_an_onnx_folder(onnx_folder, tmp_path):
    from einnas.surrogate.predictor import featurize, load_records

    records = load_records([str(onnx_folder)])
    data = featurize(records, None, None)
    assert len(data.y) == 4
    assert set(data.groups) == {f"{onnx_folder.name}/space_a", f"{onnx_folder.name}/space_b"}
    assert data.chance == pytest.approx([0.1] * 4)  # classes read from the graph's output
