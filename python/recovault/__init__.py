"""recovault: a backup agent and vault for Linux hosts.

Deduplicated, compressed and client-side encrypted recovery points, with a C++ data path
(``recovault.core``) and Python orchestration (``recovault.vault``, ``recovault.jobs``,
``recovault.restore``, ``recovault.cli``).
"""
__version__ = "0.1.0"
