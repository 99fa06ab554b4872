"""Text files einnas reads (grammar, @architecture, dataset metadata) are read with a bound, even
when their size says 0 (/dev/zero, a growing file); option values that would hang are refused."""

from __future__ import annotations

import os

import pytest

from einnas.cli import main
from einnas.errors import ArchitectureError, GrammarError


def test_a_file_whose_size_says_zero_is_still_read_with_a_bound(tmp_path, monkeypatch):
    # /dev/zero and growing files report size 0; before, read_text() then read without end.
    # Simulated safely: a finite file whose stat says 0 bytes.
    import pathlib

    from einnas.grammar import resolve_arch
    from einnas.grammar.pcfg import MAX_GRAMMAR_BYTES, load_grammar
    from einnas.grammar.seeds import MAX_ARCH_FILE_BYTES

    big = tmp_path / "big.lark"
    big.write_text("x" * (max(MAX_GRAMMAR_BYTES, MAX_ARCH_FILE_BYTES) + 10))
    real_stat = pathlib.Path.stat

    def stat(self, *args, **kwargs):
        result = real_stat(self, *args, **kwargs)
        return os.stat_result((*result[:6], 0, *result[7:])) if self == big else result

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    with pytest.raises(GrammarError, match="big.lark: grammar file is larger than"):
        load_grammar(big)
    with pytest.raises(ArchitectureError, match="big.lark: architecture file is larger than"):
        resolve_arch(f"@{big}")


def test_a_grammar_just_under_the_limit_still_reads(tmp_path):
    from einnas.grammar.pcfg import MAX_GRAMMAR_BYTES, read_user_text

    path = tmp_path / "g.lark"
    path.write_text("x" * MAX_GRAMMAR_BYTES)
    assert len(read_user_text(path, MAX_GRAMMAR_BYTES, GrammarError, "grammar file")) == MAX_GRAMMAR_BYTES
    path.write_text("x" * (MAX_GRAMMAR_BYTES + 1))
    with pytest.raises(GrammarError, match="larger than"):
        read_user_text(path, MAX_GRAMMAR_BYTES, GrammarError, "grammar file")


def test_a_huge_metadata_file_is_refused_before_parsing(tmp_path, monkeypatch):
    import numpy as np

    from einnas.errors import DatasetError
    from einnas.evaluate import datasets

    x, y = np.zeros((6, 4), np.float32), np.arange(6) % 2
    for split in ("train", "test"):
        np.save(tmp_path / f"{split}_x.npy", x)
        np.save(tmp_path / f"{split}_y.npy", y)
    (tmp_path / "metadata").write_text('{"num_classes": 2, "pad": "' + " " * 200 + '"}')
    monkeypatch.setattr(datasets, "MAX_METADATA_BYTES", 100)
    with pytest.raises(DatasetError, match="metadata: larger than 100 bytes"):
        datasets.load_dataset(tmp_path)


@pytest.mark.parametrize("kind", ["broken link", "folder"])
def test_a_metadata_entry_that_is_not_a_file_is_named_not_ignored(tmp_path, kind):
    import numpy as np

    from einnas.errors import DatasetError
    from einnas.evaluate import datasets

    x, y = np.zeros((6, 4), np.float32), np.arange(6) % 2
    for split in ("train", "test"):
        np.save(tmp_path / f"{split}_x.npy", x)
        np.save(tmp_path / f"{split}_y.npy", y)
    if kind == "folder":
        (tmp_path / "metadata.json").mkdir()
    else:
        (tmp_path / "metadata.json").symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(DatasetError, match=r"metadata\.json: not a readable file \(a broken link or a folder\)"):
        datasets.load_dataset(tmp_path)


def test_a_grammar_syntax_error_reads_file_line_column():
    from einnas.grammar import grammar_from_text

    with pytest.raises(GrammarError, match=r"^g.lark:1:7: grammar syntax error \(unexpected colon\)$"):
        grammar_from_text("root:x:0:0:root:/root:/bin/bash\n", "g.lark")


def test_sample_refuses_a_count_it_could_never_print(capsys, monkeypatch):
    # Before: `einnas sample -n 99999999999999999999` sampled (and held) forever.
    import einnas.grammar

    monkeypatch.setattr(einnas.grammar, "sample", lambda *a, **k: pytest.fail("sampling started"))
    assert main(["sample", "-n", "99999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 1,000,000 architectures" in err


@pytest.mark.parametrize("command", [["sample"], ["train", "mlp", "--dataset", "digits"],
                                     ["proxies", "nothing.onnx"], ["surrogate", "fit", "r.jsonl"]])
def test_a_negative_seed_is_one_line_for_every_command(capsys, monkeypatch, command):
    # Before: `search --seed -5` was refused but `sample`, `train`, `proxies` and `surrogate fit` took it.
    import einnas.grammar

    monkeypatch.setattr(einnas.grammar, "sample", lambda *a, **k: pytest.fail("sampling started"))
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--seed", "-5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--seed" in err and "must be 0 or more" in err and err.strip().count("\n") == 0


def test_a_predictor_folder_with_an_oversized_meta_file_is_refused_unread(tmp_path, monkeypatch):
    from einnas.errors import ModelError
    from einnas.surrogate import persistence

    folder = tmp_path / "pred"
    persistence.save({"w": __import__("numpy").zeros(3)}, {"format": persistence.FORMAT,
                                                           "format_version": persistence.FORMAT_VERSION}, folder)
    assert persistence.load(folder)[1]["format"] == persistence.FORMAT
    monkeypatch.setattr(persistence, "MAX_META_BYTES", 10)
    monkeypatch.setattr(persistence.json, "loads", lambda *a, **k: pytest.fail("meta.json parsed"))
    with pytest.raises(ModelError, match="meta.json is .* bytes, over the limit of 10"):
        persistence.load(folder)
