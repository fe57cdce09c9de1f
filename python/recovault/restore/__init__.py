"""Restore a recovery point (whole, or selected paths) to a target directory, byte for byte.

Laid out as restic's internal/restorer, one module per concern:

- ``job.py``: :class:`RestoreJob`, the walk of the trees (depth-first, memory by depth), the file pool and
  its slots, the selection, the hard-link table;
- ``target.py``: the target directory and everything that touches it (containment: opened and changed only
  by descriptor, never through a symlink; temporary names and renames; the overwrite rules and delete);
- ``files.py``: the files' contents (Python for small files, the C++ engine for big ones and images, holes,
  hard links);
- ``verify.py``: ``verify``, reading each restored file back through the descriptor opened after its rename;
- ``report.py``: :class:`RestoreStats`, the errors and warnings, the full-target stop.
"""
from .job import RestoreJob
from .report import RestoreStats
from .target import OVERWRITE_MODES

__all__ = ["OVERWRITE_MODES", "RestoreJob", "RestoreStats"]
