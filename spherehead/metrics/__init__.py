"""Metrics: FID / KID (whole dataset and per view bin), FID3D, the fake-face rate and the mirror score.

    from spherehead.metrics import compute_metrics, METRICS, validate_metrics
    results = compute_metrics(G, 'heads.zip', ['fid50k_full', 'ff_rate'], num=1000, inception='inception-2015-12-05.pt')

Modules: ``inception`` (feature network file), ``distance`` (Fréchet distance, KID),
``stats`` (dataset / generated feature statistics), ``sampling`` (seeds, poses, rendering),
``views`` (view bins), ``fid3d``, ``face`` + ``face_train`` (face classifier), ``ff_rate``,
``mirror``, ``compute`` (registry and entry point). The command ``spherehead metrics`` is
spherehead/tools/metrics.py.
"""
from spherehead.metrics.compute import METRICS, SPECS, compute_metrics, parse_metrics, validate_metrics

__all__ = ['METRICS', 'SPECS', 'compute_metrics', 'parse_metrics', 'validate_metrics']
