"""Training: configuration, phase schedule, losses, data streams, EMA, snapshots, distributed
helpers and the loop that ties them together (``train.py`` is the command line)."""
