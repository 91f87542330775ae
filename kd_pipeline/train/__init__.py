"""The training stages' library: the teacher → assistant → student chain, the training loop, KD losses."""
