"""Object-store servers on loopback for the tests: Azurite (Azure Blob) and moto (S3), one of each per test
session, started on free ports by the fixtures below and stopped at the end. `bash .ci/setup` installs both
(Azurite into .ci/node with npm, moto[server] into .venv). A server that cannot start fails the tests that
need it with the reason: those tests are never skipped.

Fixtures (conftest.py imports them):
* ``azurite`` / ``moto``: the session's server (`Server`: endpoint, credentials, pid); ``run_azurite(location,
  port)`` starts a private one (stopped and started again on the same location, it keeps its data).
* ``azure_env`` / ``s3_env``: point the SDKs' environment variables at that server for one test (and clear
  every other AZURE_* / AWS_* variable, so a developer's own credentials never leak in); they return the
  server.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Azurite's well-known development account (public, documented by Microsoft: not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#: Any key pair works with moto; this one is only for the tests' own greps (it must never be printed).
MOTO_KEY_ID = "AKIARECOVAULTTEST0001"
MOTO_SECRET = "rv-test-secret-" + "q7ZK2mX9pL4wN8vB3cR6tY1uJ5hG0fD"
_START_TIMEOUT = 60.0


class Server(NamedTuple):
    """One running emulator: ``endpoint`` is what the SDK is pointed at; ``env`` the variables that do it."""

    name: str
    endpoint: str
    env: Dict[str, str]
    log: Path
    pid: int  # of the server process: a test may kill it


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(stem: str = "rv") -> str:
    """A fresh container/bucket name (lowercase, valid for both services)."""
    return f"{stem}-{secrets.token_hex(6)}"


def _wait_for_port(proc: "subprocess.Popen[bytes]", port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with status {proc.returncode} while starting; its output:\n"
                        f"{log.read_text(errors='replace')[-2000:]}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {_START_TIMEOUT:.0f} s; its output:\n"
                f"{log.read_text(errors='replace')[-2000:]}", pytrace=False)


@contextmanager
def _run(argv: List[str], what: str, port: int, workdir: Path) -> Iterator["subprocess.Popen[bytes]"]:
    """``argv`` running (output in workdir/server.log) until the block ends; fails the test if it never
    listens on ``port``."""
    log = workdir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=workdir, start_new_session=True)
    try:
        _wait_for_port(proc, port, what, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _find(program: str, *candidates: Path) -> str:
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(program)
    if found is None:
        pytest.fail(f"{program} is not installed: run `bash .ci/setup` (it installs the object-store "
                    "emulators the tests start)", pytrace=False)
    return found


@contextmanager
def run_azurite(location: Path, port: int) -> Iterator[Server]:
    """Azurite's blob service on ``port`` keeping its data in ``location`` (a server started again on the
    same location has the same containers and blobs)."""
    program = _find("azurite-blob", REPO / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob")
    location.mkdir(parents=True, exist_ok=True)
    argv = [program, "--disableTelemetry", "--silent", "--skipApiVersionCheck", "--location", str(location / "data"),
            "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    with _run(argv, "azurite-blob", port, location) as proc:
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        conn = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={endpoint};")
        yield Server("azurite", endpoint, {"AZURE_STORAGE_CONNECTION_STRING": conn}, location / "server.log",
                     proc.pid)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Server]:
    """Azurite's blob service on a free loopback port, data in its own temporary directory."""
    with tempfile.TemporaryDirectory(prefix="rv-azurite-") as tmp:
        with run_azurite(Path(tmp), free_port()) as server:
            yield server


@contextmanager
def run_moto(work: Path, port: int) -> Iterator[Server]:
    """moto's S3 server on ``port`` (it keeps everything in memory; ``work`` holds its log)."""
    program = _find("moto_server", Path(sys.executable).parent / "moto_server")
    with _run([program, "-H", "127.0.0.1", "-p", str(port)], "moto_server", port, work) as proc:
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": MOTO_KEY_ID,
               "AWS_SECRET_ACCESS_KEY": MOTO_SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
        yield Server("moto", endpoint, env, work / "server.log", proc.pid)


@pytest.fixture(scope="session")
def moto() -> Iterator[Server]:
    """moto's S3 server on a free loopback port (it keeps everything in memory)."""
    with tempfile.TemporaryDirectory(prefix="rv-moto-") as tmp:
        with run_moto(Path(tmp), free_port()) as server:
            yield server


def _isolate(monkeypatch: pytest.MonkeyPatch, family: str, server: Server, tmp: Path) -> Server:
    for var in list(os.environ):
        if var.startswith(family):
            monkeypatch.delenv(var)
    if family == "AWS_":  # no shared config or credentials files of the developer's
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp / "aws-config-none"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "aws-credentials-none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var, value in server.env.items():
        monkeypatch.setenv(var, value)
    return server


@pytest.fixture
def azure_env(azurite: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Server:
    return _isolate(monkeypatch, "AZURE_", azurite, tmp_path)


@pytest.fixture
def s3_env(moto: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Server:
    return _isolate(monkeypatch, "AWS_", moto, tmp_path)
