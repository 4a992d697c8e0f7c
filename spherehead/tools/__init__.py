"""Command-line tools behind `spherehead ...` (one module per command)."""
