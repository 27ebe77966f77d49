"""Training: data loading, CPD masking, length-bucketed batches and the training loop."""
