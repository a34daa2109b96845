"""The on-disk formats, one module each defining, writing, reading and version-checking
its file: the stem cache (cache), checkpoints (checkpoint), a scored run's summary.json
(summary) and an experiment set's table (experiment_table)."""
