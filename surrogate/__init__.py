"""The surrogate: ONNX -> text, features, the predictor, benchmark records, ``score``.

Public names (issues 6 and 10; see ``docs/surrogate.md``)::

    Bench, BenchConfig, build, export         einnas bench build / export: records made in an Optuna study
    records.load_records, read_records        training records from studies, JSON Lines and ONNX folders
    read_onnx_folder                          ONNX-Bench-style folders (accuracy in metadata_props)
    TextEncoder, segments                     description text -> MiniLM vector (ONNX Runtime)
    GraphRecord, NUMERIC_NAMES, describe_arch, describe_file, feature_table, Task
    BasePredictor, Prediction                 the predictor interface (fit, predict, ranges, target, rank)
    Predictor, FitConfig, fit, fit_predictor, featurize, load_records, rank_metrics, split_of
    Scorer, Score, load_predictor, PRETRAINED einnas score
"""

from einnas.surrogate.bench import Bench, BenchConfig, build, export, read_records
from einnas.surrogate.encoder import TextEncoder, segments
from einnas.surrogate.features import NUMERIC_NAMES, GraphRecord, describe_arch, describe_file, feature_table
from einnas.surrogate.interface import BasePredictor, Prediction
from einnas.surrogate.onnxbench import read_folder as read_onnx_folder
from einnas.surrogate.predictor import (
    FitConfig, Predictor, featurize, fit_predictor, load_records, rank_metrics, split_of,
)
from einnas.surrogate.score import PRETRAINED, Score, Scorer, load_predictor
from einnas.surrogate.selection import fit
from einnas.surrogate.task import Task

__all__ = [
    "NUMERIC_NAMES", "PRETRAINED", "BasePredictor", "Bench", "BenchConfig", "FitConfig", "GraphRecord", "Prediction",
    "Predictor", "Score", "Scorer", "Task", "TextEncoder", "build", "describe_arch", "describe_file", "export",
    "feature_table", "featurize", "fit", "fit_predictor", "load_predictor", "load_records", "rank_metrics",
    "read_onnx_folder", "read_records", "segments", "split_of",
]

# Zero-cost proxies (issue 10.3; see einnas.surrogate.proxies)
from einnas.surrogate.proxies import PROXY_NAMES, ProxyResult, compute_proxies, proxies_for_arch, proxies_for_onnx  # noqa: E402

__all__ += ["PROXY_NAMES", "ProxyResult", "compute_proxies", "proxies_for_arch", "proxies_for_onnx"]
