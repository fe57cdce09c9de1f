"""Jobs that run themselves: a TOML job file describes one backup job (its vault, sources, backup modes,
retention, bandwidth limits, check cadence, hooks, schedule and reports), and the system's scheduler runs
`recovault job run FILE`.

- `spec`: the job file's typed model and `load_job(path)` (every problem with its line);
- `runner`: `Job` (`Job.from_file(path).run() -> RunRecord`): the lock, hooks, mode rules, backup, forget and
  prune, check, through the library;
- `history`: the SQLite journal of runs (`History`, `RunRecord`).

(The word "job" alone means a backup or prune operation in `recovault.jobs`; this package is the job *file*.)
"""
