"""Scoring a model: task types (how records become inputs, which head trains, how a task is scored), predictions,
metrics, QA and tagging helpers, robustness under attack, and alignment metrics on parallel data."""
