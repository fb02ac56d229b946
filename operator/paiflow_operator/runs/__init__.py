"""PaiPipelineRun, followed or launched: the per-run record, the pure cores, polling, writes and launching."""
