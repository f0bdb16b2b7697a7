"""Statistics over result rows, as six named steps (:func:`xltlib.analysis.summary.analyze_run` runs them in
order): :mod:`.gate` (did each checkpoint learn its task?), :mod:`.compare` (robust methods vs the baseline),
:mod:`.merge` (alignment beside the task score), :mod:`.rq1` (does the alignment a checkpoint reaches track its
transfer?), :mod:`.rq2` (does robust training improve alignment, most for low-resource languages?) and
:mod:`.summary` (the typed result and its words, with :mod:`.literature`: the source paper's claims checked).
:mod:`.score` says which rows hold a task's score; :mod:`.inference` holds the tests they share.
Pure functions of data frames; no file or notebook I/O."""
