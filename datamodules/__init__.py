"""Datasets, transforms and the shared LightningDataModule; the synthetic generator in `synthetic/`."""

from datamodules.datamodule import DenseHMRDataModule

__all__ = ["DenseHMRDataModule"]
