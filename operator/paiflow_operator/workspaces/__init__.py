"""PaiWorkspace: a PAI workspace mirrored as PaiPipelineRuns (pure planning, scans)."""
