"""Encoders and heads: loading by hub name, local path or the offline ``me5-small`` (``me5_offline``), and the
task heads a checkpoint trains."""
