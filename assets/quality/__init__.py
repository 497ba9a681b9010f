"""Data-quality checks on the unified model as Dagster asset checks; failing rows go to reconcile.quarantine."""
