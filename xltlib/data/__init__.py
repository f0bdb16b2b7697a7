"""Reading data: XTREME-layout files and hub readers (``tasks``), the training sets, the zero-shot split, the
parallel sentences used to measure alignment, the language table, and synthetic data for tests and smoke runs."""
