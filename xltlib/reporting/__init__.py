"""What a reader sees: display tables, plots, the export of a run to ``docs/results`` and the HTML index."""
