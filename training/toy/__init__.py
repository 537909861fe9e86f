"""2-D toys where the exact energy-guided law is known: the numerical check of EFM's exactness
(docs/architecture.md, Theorem 4.3 of arXiv 2503.04975). `qipo toy bench` runs it."""

from training.toy.bench import BenchConfig, BenchResult, run_bench, write_outputs
from training.toy.datasets import DATASETS, ToyDataset, get_dataset
from training.toy.exact import ResampleReport, effective_sample_size, sample_tilted, tilt_weights
from training.toy.metrics import mmd, sliced_wasserstein

__all__ = [
    "DATASETS",
    "BenchConfig",
    "BenchResult",
    "ResampleReport",
    "ToyDataset",
    "effective_sample_size",
    "get_dataset",
    "mmd",
    "run_bench",
    "sample_tilted",
    "sliced_wasserstein",
    "tilt_weights",
    "write_outputs",
]
