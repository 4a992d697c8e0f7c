"""Datasets: the EG3D / PanoHead format reader, synthetic full heads, packing, checking, re-balancing.

See docs/datasets.md for the layout, the parsing class table and the command line.
"""
from spherehead.data.dataset import DatasetOptions, HeadDataset
from spherehead.data.errors import DatasetError
from spherehead.data.rebalance import RebalanceReport, duplication_counts, rebalance

__all__ = ['DatasetOptions', 'HeadDataset', 'DatasetError', 'RebalanceReport', 'duplication_counts', 'rebalance']
