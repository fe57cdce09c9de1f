"""Output that scripts can rely on: every command of cli.COMMANDS that prints a --json document has its JSON
Schema in docs/schemas/<command>.json and its section in docs/json.md, and its real output (from one scenario
run here, every command in turn against a small vault) validates against that schema; so do the errors
(docs/schemas/error.json). Times inside must be RFC 3339 UTC (the schemas' common "time").

A new command gets an entry in RUNS (its invocations, in scenario order), in ELSEWHERE (the test that
validates its output, when it cannot run here) or in NO_JSON (why it prints no JSON document); nothing is
skipped silently: a command in COMMANDS in none fails, as does one without a schema, or a NO_JSON command that
has a schema after all. Entries of commands that are not in COMMANDS (yet) are not
run. A group's schema holds one `$defs` entry per subcommand (validated against that entry).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence

import pytest

jsonschema = pytest.importorskip("jsonschema")  # the `test` extra: present in CI (bash .ci/setup)
from referencing import Registry, Resource  # noqa: E402  (jsonschema's own dependency)

from recovault.cli import COMMANDS  # noqa: E402

from test_cli import PASSPHRASE, api_vault  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
JSON_MD = ROOT / "docs" / "json.md"
NEW_PASSPHRASE = "another passphrase of enough length"

# Commands that print no --json document, and why (docs/json.md says so too).
NO_JSON: Dict[str, str] = {
    "dump": "writes a file's bytes, or a directory as tar, to stdout",
}

# Commands whose --json output cannot run in the scenario (a FUSE mount serves in the background) and is
# validated against its schema by another test: command -> that test's file (which must name the schema).
ELSEWHERE: Dict[str, str] = {"mount": "test_mount.py"}

# The scenario: every invocation, in order (later ones use what earlier ones made). {name} fields are filled
# from Scenario.fields: vault, src, image, target, out, replica, new_vault, keyfile, host_key, old, new, keyid,
# schedule_job, ec_vault (an erasure-coded vault).
RUNS: Dict[str, List[List[str]]] = {
    "version": [["version"]],
    "init": [["init", "--vault", "{new_vault}"]],
    "backup": [["backup", "{src}", "--tag", "first"], ["backup", "--image", "{image}"],
               ["backup", "{src}", "--tag", "second"]],
    "ls": [["ls", "latest", "{src}"], ["ls", "latest", "{src}", "--recursive"]],
    "diff": [["diff", "{old}", "{new}"]],
    "find": [["find", "*.txt"]],
    "restore": [["restore", "latest", "--target", "{target}"],
                ["restore", "{image_point}", "--to", "{out}", "--image", "{image}"]],
    "stats": [["stats"]],
    "status": [["status"]],
    "check": [["check"], ["check", "--read-data"], ["check", "--vault", "{ec_vault}"]],
    "policy": [["policy", "show"], ["policy", "set", "--keep-last", "5"]],
    "forget": [["forget", "--keep-last", "1", "--dry-run"], ["forget", "{old}"]],
    "snapshots": [["snapshots"], ["snapshots", "--deleted"]],  # after forget: one point is soft-deleted
    "undelete": [["undelete", "{old}"]],
    "prune": [["prune", "--dry-run"], ["prune", "--margin", "0"]],
    "copy": [["copy", "--from", "{vault}", "--to", "{replica}"]],
    "repair": [["repair", "index"], ["repair", "--from", "{replica}", "--dry-run"], ["repair", "--from", "{replica}"],
               ["repair", "--vault", "{ec_vault}"]],
    "migrate": [["migrate"]],
    "key": [  # last: passwd changes the passphrase (the scenario follows)
            ["key", "list"], ["key", "add", "--new-passphrase-file", "{keyfile}", "--label", "second"],
            ["key", "add", "--role", "host", "--host", "web1", "--export", "{host_key}",
             "--new-passphrase-file", "{keyfile}"],  # the vault is format 3 from here on
            ["key", "list"], ["key", "rotate"], ["key", "rotate", "--rewrite", "--margin", "0"],
            ["key", "revoke", "{host_keyid}"], ["key", "remove", "{keyid}"],
            ["key", "passwd", "--new-passphrase-file", "{keyfile}"]],
    "cache": [["cache"]],
    "history": [["history"], ["history", "web", "--limit", "1"], ["history", "--stale", "1000d"]],
    "job": [["job", "validate", "{jobfile}"], ["job", "run", "{jobfile}"],  # the job file names the vault
            ["job", "list", "--jobs-dir", "{jobs_dir}"], ["job", "schedule", "{schedule_job}", "--dry-run"]],
}
# Runs that must print an error document (as every command does): {"error", "exit_code"}.
ERROR_RUNS: List[List[str]] = [["restore", "no-such-point", "--target", "{target}"], ["snapshots", "--vault", "{target}/none"],
                               ["backup", "--vault", "{new_vault}"]]


class Output(NamedTuple):
    argv: List[str]
    code: int
    doc: Any


def run_json(argv: Sequence[str]) -> Output:
    """`recovault ARGV --json` in this process: its exit code and its stdout as one JSON document."""
    from recovault.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(list(argv) + ["--json"])
    text = out.getvalue()
    assert len(text.splitlines()) == 1, f"{argv}: not one JSON document on stdout: {text!r} (stderr {err.getvalue()})"
    return Output(list(argv), exc.value.code, json.loads(text))


class Scenario:
    def __init__(self, tmp: Path) -> None:
        rng = random.Random(11)
        src = tmp / "src"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_text("alpha\n")
        (src / "sub" / "b.bin").write_bytes(rng.randbytes(200_000))
        os.symlink("a.txt", src / "link")
        image = tmp / "disk.img"
        image.write_bytes(rng.randbytes(64 << 10) + bytes(64 << 10))
        (tmp / "newpass").write_text(NEW_PASSPHRASE + "\n")
        os.chmod(tmp / "newpass", 0o600)
        (tmp / "jobs").mkdir()
        (tmp / "jobs" / "nightly.toml").write_text(  # job schedule --dry-run: its [schedule] (nothing is written)
            f'[vault]\nurl = "{tmp / "vault"}"\npassphrase_env = "RECOVAULT_PASSPHRASE"\n[backup]\npaths = ["{src}"]\n'
            '[schedule]\ncalendar = ["*-*-* 01:30", "Mon..Fri 13:30"]\n')
        self.fields = dict(vault=api_vault(tmp / "vault"), src=str(src), image=str(image), target=str(tmp / "t"),
                           out=str(tmp / "out.img"), replica=api_vault(tmp / "replica"),
                           new_vault=str(tmp / "new-vault"), keyfile=str(tmp / "newpass"), host_key=str(tmp / "web1.key"),
                           jobs_dir=str(tmp / "jobs"), schedule_job=str(tmp / "jobs" / "nightly.toml"))
        self.fields["jobfile"] = str(tmp / "nightly.toml")
        self.fields["ec_vault"] = api_vault("ec:2+1:" + ",".join(str(tmp / "ec" / f"d{i}") for i in range(3)))
        (tmp / "nightly.toml").write_text(
            f'[vault]\nurl = "{self.fields["vault"]}"\npassphrase_env = "RECOVAULT_PASSPHRASE"\n'
            f'[backup]\npaths = ["{src}"]\ntags = ["nightly"]\n[retention]\nkeep_last = 3\nprune = true\n'
            '[check]\nevery = "7d"\n[[hooks.before]]\ncommand = "true"\n')
        self.outputs: Dict[str, List[Output]] = {}
        self._record_a_job_run(tmp)

    def _record_a_job_run(self, tmp: Path) -> None:
        """A job file and one finished run of it in the history (RECOVAULT_STATE_DIR, set by the fixture), for
        `history` and `job list`."""
        from recovault.jobfile.history import History, RunStep
        (tmp / "jobs" / "web.toml").write_text('[vault]\nurl = "/backup/vault"\npassphrase_env = "P"\n'
                                               '[backup]\npaths = ["/srv"]\n[schedule]\ncalendar = ["daily"]\n')
        h = History(str(tmp / "state" / "history.sqlite"))
        r = h.start("web", str(tmp / "jobs" / "web.toml"), "web1", "incremental", os.getpid())
        r.status, r.exit_code, r.snapshot, r.steps = "ok", 0, "ab" * 32, [RunStep("backup", "ok", 0.5)]
        h.finish(r)

    def argv(self, argv: List[str]) -> List[str]:
        """`argv` with its fields filled, against the scenario's vault unless it names one."""
        return [a.format(**self.fields) for a in argv] + ([] if "--vault" in argv else ["--vault", self.fields["vault"]])

    def play(self) -> None:
        for command, runs in RUNS.items():
            if command not in COMMANDS:
                continue  # another lane's command, not on this branch yet
            for argv in runs:
                res = run_json(self.argv(argv))
                assert res.code == 0, res
                self.outputs.setdefault(command, []).append(res)
                self._learn(command, argv, res.doc)
        self.errors = [run_json(self.argv(argv)) for argv in ERROR_RUNS]

    def _learn(self, command: str, argv: List[str], doc: Any) -> None:
        """Keep what later invocations name: the points of the backups, the key added."""
        if command == "backup":
            if "--image" in argv:
                self.fields["image_point"] = doc["id"]
            else:
                self.fields.setdefault("old", doc["id"])
                self.fields["new"] = doc["id"]
        elif argv[:2] == ["key", "add"] and "--role" not in argv:  # a host key is no key file to remove
            self.fields["keyid"] = doc["keyid"]
        elif argv[:2] == ["key", "add"]:
            self.fields["host_keyid"] = doc["keyid"]
        elif argv[:2] == ["key", "passwd"]:
            os.environ["RECOVAULT_PASSPHRASE"] = NEW_PASSPHRASE  # the fixture's MonkeyPatch restores it


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    tmp = tmp_path_factory.mktemp("json")
    s = Scenario(tmp)
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("RECOVAULT_")]:
            mp.delenv(k)
        mp.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
        mp.setenv("RECOVAULT_FROM_PASSPHRASE", PASSPHRASE)  # copy's source
        mp.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))
        mp.setenv("RECOVAULT_STATE_DIR", str(tmp / "state"))  # job run's history and lock
        s.play()
    return s


def registry() -> Registry:
    """Every schema file by its name, so that "common.json#/$defs/..." resolves as it does beside the files."""
    return Registry().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text()))) for p in SCHEMAS.glob("*.json"))


def schema_of(command: str) -> Dict[str, Any]:
    path = SCHEMAS / f"{command}.json"
    assert path.exists(), f"{command} prints a --json document but has no schema: write docs/schemas/{command}.json"
    return json.loads(path.read_text())


def validate(doc: Any, schema: Dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, registry=registry(),
                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).validate(doc)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_output_matches_its_schema(scenario, command):
    if command in NO_JSON:
        assert not (SCHEMAS / f"{command}.json").exists(), \
            f"{command} has a schema: move it from NO_JSON to RUNS (its invocations) or ELSEWHERE (its test)"
        assert f"`{command}`" in JSON_MD.read_text(), f"docs/json.md does not say why {command} prints no JSON"
        return
    schema = schema_of(command)
    assert re.search(rf"^## `{command}`", JSON_MD.read_text(), re.M), f"docs/json.md has no section for {command}"
    if command in ELSEWHERE:
        assert f"{command}.json" in (ROOT / "tests" / ELSEWHERE[command]).read_text(), ELSEWHERE[command]
        return
    assert command in RUNS, f"{command} is in none of RUNS, ELSEWHERE and NO_JSON of {__file__}"
    for res in scenario.outputs[command]:
        sub = res.argv[1] if "$defs" in schema and res.argv[1] in schema["$defs"] and "anyOf" in schema else None
        validate(res.doc, {"$ref": f"{command}.json#/$defs/{sub}"} if sub else schema)
        validate(res.doc, schema)


def test_errors_match_the_error_schema(scenario):
    for res in scenario.errors:
        assert res.code not in (0, None) and res.doc["exit_code"] == res.code
        validate(res.doc, schema_of("error"))


def test_every_schema_file_belongs_to_a_command():
    """No schema is left over for a command that does not exist (common.json and error.json are shared)."""
    names = {p.stem for p in SCHEMAS.glob("*.json")} - {"common", "error"}
    assert names <= set(COMMANDS) | set(RUNS), sorted(names - set(COMMANDS) - set(RUNS))


def test_schema_version_is_documented():
    from recovault.cli.version_cmd import SCHEMA_VERSION
    assert f"schema_version` is {SCHEMA_VERSION}" in JSON_MD.read_text()


def test_times_are_printed_in_one_form_even_from_old_key_files(tmp_path, monkeypatch):
    """A version 1 key file stores whole seconds ("2026-11-01T10:00:00Z"): `key list` prints the one form."""
    from recovault import api
    from test_keys import write_v1_key
    monkeypatch.setenv("RECOVAULT_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    vault = api_vault(tmp_path / "vault")
    with api.open_vault(vault, PASSPHRASE, cache_dir=str(tmp_path / "c")) as v:
        write_v1_key(v.storage, "another passphrase", v.master)
    res = run_json(["key", "list", "--vault", vault])
    assert res.code == 0 and "2026-11-01T10:00:00.000000Z" in [k["created"] for k in res.doc]
    validate(res.doc, {"$ref": "key.json#/$defs/list"})


def test_the_examples_in_json_md_match_their_schemas():
    """Each ```json example under a command's section of docs/json.md validates against that command's
    schema (the one in the rules, an error, against error.json): the documentation stays true."""
    checked = 0
    for section in re.split(r"^## ", JSON_MD.read_text(), flags=re.M)[1:]:
        m = re.match(r"`(\w+)`", section)
        schema = schema_of(m.group(1)) if m else schema_of("error")
        for block in re.findall(r"```json\n(.*?)```", section, re.S):
            validate(json.loads(block), schema)
            checked += 1
    assert checked >= 15


if __name__ == "__main__":  # `python tests/test_json_schemas.py`: the scenario's real outputs, to refresh json.md
    import tempfile
    tmp_dir = Path(tempfile.mkdtemp(prefix="recovault-json-"))
    played = Scenario(tmp_dir)
    os.environ.update(RECOVAULT_PASSPHRASE=PASSPHRASE, RECOVAULT_FROM_PASSPHRASE=PASSPHRASE,
                      XDG_CACHE_HOME=str(tmp_dir / "xdg"), RECOVAULT_STATE_DIR=str(tmp_dir / "state"))
    played.play()
    for name, outputs in played.outputs.items():
        for output in outputs:
            print(f"## {name}: recovault {' '.join(output.argv)}\n{json.dumps(output.doc, indent=2, sort_keys=True)}")
