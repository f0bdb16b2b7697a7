"""What a reader sees: display tables (:mod:`.tables`), figures (:mod:`.plots`), the export of a run to
``docs/results`` (:mod:`.export`) and the HTML index (:mod:`.index`)."""
