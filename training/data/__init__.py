"""Datasets: generation (Pendulum scripted controller) and loading (Minari, HDF5, npz)."""

from training.data.dataset import DatasetError, TransitionDataset, load_dataset

__all__ = ["DatasetError", "TransitionDataset", "load_dataset"]
