"""Jobs that run themselves: job files (TOML) describe a backup job, the system's scheduler runs it, each run
is recorded in a local journal (`history`) and reported (`report`). "jobfile" because "job" alone already
means a backup or prune operation (`recovault.jobs`)."""
