"""The run's params: ``schema`` (typed sections with defaults), ``grid`` (the cells of a run) and ``validate``
(loading a params file and checking every name against its registry; it sits above the registries it checks)."""
