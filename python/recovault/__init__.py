"""recovault: a backup agent and vault for Linux hosts.

Deduplicated, compressed and client-side encrypted recovery points, with a C++ data path
(``recovault.core``) and Python orchestration (``recovault.vault``, ``recovault.jobs``,
``recovault.restore``, ``recovault.cli``).
"""
__version__ = "0.1.0"


def __getattr__(name: str):  # recovault.Job, imported when first asked for (start-up time of every run)
    if name == "Job":
        from .jobfile.runner import Job
        return Job
    raise AttributeError(f"module 'recovault' has no attribute {name!r}")
