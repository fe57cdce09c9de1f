"""Run one fuzz harness under atheris (libFuzzer): ``python fuzz/run.py NAME [libFuzzer options] [CORPUS]``.

NAME is one of harnesses.HARNESSES (``--list`` prints them). recovault's Python modules are instrumented for
coverage; the C++ core is not (its parsers are reached through them). A CORPUS directory that is empty is
seeded first from the fixture vault's objects (fixture.py). Any libFuzzer option works, e.g. ``-runs=2000``,
``-timeout=10`` (a hang), ``-rss_limit_mb=2048``, ``-artifact_prefix=DIR/`` (where a finding's input goes).
An input the harness's parser refuses with one of its expected errors is fine; any other exception stops
the run with its traceback (exit 1), like a crash or a timeout (libFuzzer's own exit codes).
"""
from __future__ import annotations

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["recovault"]):
    import recovault.jobfile.spec  # noqa: F401,E402 - instrumented with the rest
    import recovault.jobs.image  # noqa: F401,E402
    from harnesses import HARNESSES  # noqa: E402

from fixture import build  # noqa: E402
from mutators import json_mutator  # noqa: E402


def _seed(corpus: str, seeds: list) -> None:
    for data in seeds:
        with open(os.path.join(corpus, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)


def main(argv: list) -> None:
    if len(argv) < 2 or argv[1] == "--list":
        for h in HARNESSES.values():
            print(f"{h.name:8} {h.what}")
        return
    harness = HARNESSES[argv[1]]
    fx = build()
    corpora = [a for a in argv[2:] if not a.startswith("-") and os.path.isdir(a)]
    if corpora and not os.listdir(corpora[0]):
        _seed(corpora[0], harness.seeds(fx))
    expected = harness.expected

    def one_input(data: bytes) -> None:
        try:
            harness.run(fx, data)
        except expected:
            pass

    mutator = json_mutator(harness.json_at) if harness.json_at >= 0 else None
    atheris.Setup([argv[0]] + argv[2:], one_input, custom_mutator=mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
