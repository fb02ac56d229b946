"""Replicas sharing the work: who owns which object (sharding), Lease membership, hand-over of runs."""
