"""Running a study: the run folder and its keys, the stage functions the notebooks call, papermill execution,
executors (local, Ray), the pipeline and ``xlt lab``."""
