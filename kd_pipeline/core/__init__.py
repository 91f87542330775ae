"""What every stage reads: params, paths, prepared data, models and checkpoints, metrics, errors."""
