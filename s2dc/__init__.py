"""S²DC: structure-aware semantic discrepancy and consistency pretraining for 3-D medical images."""

__version__ = "0.1.0"
