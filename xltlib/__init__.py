"""xltlib: does robust training align languages in a multilingual encoder, and does alignment explain zero-shot
transfer? Subpackages by role, imported one way (``pyproject.toml``, import-linter): cli -> runner -> reporting ->
analysis -> config.validate -> evaluation -> training -> models -> config schema -> data -> core."""
