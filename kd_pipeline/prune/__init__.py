"""The prune stage's library: which model to prune (origin) and Torch-Pruning."""
