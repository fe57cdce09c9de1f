"""Jobs that run themselves: job files (TOML), their runs, history, schedules and reports (issue 12)."""
