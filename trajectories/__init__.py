"""Canonical trajectories: the schema every source is converted to, and the source loaders."""
