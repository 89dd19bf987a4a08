"""Many files at once: pairing inputs with outputs, the per-file task, and its executors
(this process, a local process pool, a Ray cluster)."""
