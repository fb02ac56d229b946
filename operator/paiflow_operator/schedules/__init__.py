"""PaiPipelineSchedule: cron-scheduled launched runs (plan.py pure, controller.py I/O)."""
