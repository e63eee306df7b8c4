"""Running the model over the data: training, evaluation and its metrics, feature caches,
checkpoints, distributed training, provenance records, and the numerics trace."""
