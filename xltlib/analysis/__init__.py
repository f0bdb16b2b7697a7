"""Statistics over result rows, as six named steps (:func:`xltlib.analysis.summary.analyze_run` runs them in
order): :mod:`.gate` (did each checkpoint learn its task?), :mod:`.compare` (robust methods vs the baseline),
:mod:`.merge` (alignment beside the task score), :mod:`.rq1` (does alignment track transfer?), :mod:`.rq2` (do
robust objectives help low-resource languages most?) and :mod:`.summary` (the typed result and its words).
:mod:`.score` says which rows hold a task's score; :mod:`.inference` holds the tests they share.
Pure functions of data frames; no file or notebook I/O."""
