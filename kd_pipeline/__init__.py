"""kd-pipeline: distil a large image classifier into a small, fast one, reproducibly."""

__version__ = "0.1.0"
