"""Fine-tuning: the training loop, robust objectives (``objectives``), precision, dropout, batching and
checkpoints on disk. The task type a loop trains is passed in, so nothing here imports the evaluation layer."""
