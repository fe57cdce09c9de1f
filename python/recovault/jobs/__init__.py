"""Backup jobs: walking trees (walk), files and directories (backup), disk images and streams (image)."""

#: Backup modes: against the latest recovery point, against the latest full one, or from scratch.
MODES = ("incremental", "differential", "full")
