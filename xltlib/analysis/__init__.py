"""Statistics over result rows: the quality gate, robust methods vs the baseline, RQ1 (alignment vs transfer) and
RQ2 (gains vs resource size), and the summary. Pure functions of data frames; no file or notebook I/O."""
