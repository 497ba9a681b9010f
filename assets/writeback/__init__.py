"""Write-back: reconcile.mismatches -> a plan of writes (dry run) -> writeback.outbox -> apply, exactly once."""
