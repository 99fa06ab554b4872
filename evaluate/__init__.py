"""Evaluate candidates: offline datasets, Unseen-NAS folders and the einspace trainer.

Public names::

    load_dataset(name_or_path) -> Dataset        built-in name (digits, mnist1d, mnist5k, addnist5k) or folder / .npz
    from_arrays(name, train, valid, test, num_classes=None) -> Dataset
    train(model_or_factory, dataset, config, seed=, device=, final=, test=, progress=) -> TrainResult
    check_size(model, input_shape, batch_size, max_params, max_activation_bytes) -> SizeCheck
    resolve_device("auto" | "cpu" | "cuda") -> torch.device
"""

from einnas.evaluate.datasets import BUILTIN_DATASETS, Dataset, from_arrays, load_dataset
from einnas.evaluate.trainer import (
    REASONS,
    EpochStats,
    SizeCheck,
    TrainConfig,
    TrainResult,
    check_size,
    count_params,
    resolve_device,
    train,
)

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "EpochStats",
    "REASONS",
    "SizeCheck",
    "TrainConfig",
    "TrainResult",
    "check_size",
    "count_params",
    "from_arrays",
    "load_dataset",
    "resolve_device",
    "train",
]
