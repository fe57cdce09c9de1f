"""The backup tree walker: which files a backup visits, in which order.

``walk(roots, rules)`` yields one ``Entry`` per file-system object under each root,
depth-first (a directory before its contents), siblings sorted by the bytes of their
names, so two walks of an unchanged tree give the same sequence. Symlinks are never
followed (everything is ``lstat``-ed, roots included). Per-file problems (unreadable
directories, files vanishing mid-walk) go to ``on_error(path, exc)`` and the walk goes on.

The walk holds one descriptor per directory it is inside (``O_DIRECTORY | O_NOFOLLOW``),
lists and stats through it (``scandir(fd)``, ``fstatat``), and gives each entry its
directory's descriptor (``Entry.dir_fd``), as borg does: depth is not limited by
``PATH_MAX`` (4096 bytes), only by the number of open descriptors, and a directory
replaced by a symlink during the walk is not followed.

Exclusion (``ExcludeRules``) uses gitignore semantics via ``pathspec.GitIgnoreSpec``,
matched against the path *relative to the backup root* being walked:

* ``*.log`` matches at any depth, ``/tmp`` or ``var/tmp`` is anchored at the root (a
  pattern containing a non-trailing ``/`` is anchored, as in git), ``cache/`` matches
  directories only, ``**`` spans directories, ``!pattern`` re-includes.
* An excluded directory is not descended into, so (as in git) ``!dir/keep`` cannot
  re-include something under an excluded ``dir/``; write ``dir/*`` + ``!dir/keep`` instead.
* Roots themselves are never excluded (the user named them explicitly). With root ``/``
  relative paths are the absolute path minus the leading ``/``, so ``/etc/shadow`` anchors
  exactly as one would expect.
* ``exclude_caches``: a directory holding a regular file ``CACHEDIR.TAG`` whose first 43
  bytes are ``Signature: 8a477f597d28d172789f06886806bc55`` is kept (its entry and the tag
  file are yielded, like borg's ``--keep-exclude-tags``) but nothing else in it is.
"""
from __future__ import annotations

import errno
import os
import re
import stat
import sys
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..errors import UsageError

if TYPE_CHECKING:
    import pathspec

__all__ = [
    "CACHEDIR_TAG",
    "CACHEDIR_SIGNATURE",
    "ExcludeRules",
    "Entry",
    "Walker",
    "walk",
    "has_cache_tag",
]

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"

OnError = Callable[[str, OSError], None]

_S_ISDIR = stat.S_ISDIR
_S_IFMT = stat.S_IFMT
_S_IFDIR = stat.S_IFDIR
#: Linux's PATH_MAX: a path this long or longer (with its NUL) cannot be passed to the kernel.
PATH_MAX = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

if sys.getfilesystemencoding().lower().replace("-", "") == "utf8":

    def _name_key(de: "os.DirEntry[str]") -> bytes:
        return de.name.encode("utf-8", "surrogateescape")

else:  # pragma: no cover - Linux Python uses UTF-8 for file names in practice

    def _name_key(de: "os.DirEntry[str]") -> bytes:
        return os.fsencode(de.name)


# ---------------------------------------------------------------- exclusion


class ExcludeRules:
    """Gitignore-style exclusion patterns plus the CACHEDIR.TAG rule (see the module docstring)."""

    def __init__(self, patterns: Iterable[str] = (), exclude_caches: bool = False) -> None:
        self.patterns: List[str] = list(patterns)
        self.exclude_caches = exclude_caches
        self._spec: Optional["pathspec.GitIgnoreSpec"] = None
        self._prefilter: Optional[_Prefilter] = None
        if not self.patterns:
            return  # the common case: no patterns, and no pathspec import (start-up time)
        import pathspec
        try:
            spec = pathspec.GitIgnoreSpec.from_lines(self.patterns)
        except (ValueError, re.error):  # pathspec's own errors are ValueErrors; a bad [range] is a re.error
            raise UsageError(_bad_pattern(self.patterns)) from None
        effective = [p for p in spec.patterns if p.include is not None]
        self._spec = spec if effective else None
        self._prefilter = _Prefilter.build(effective)

    @classmethod
    def from_options(
        cls,
        patterns: Sequence[str] = (),
        pattern_files: Sequence[str] = (),
        exclude_caches: bool = False,
    ) -> "ExcludeRules":
        """Rules from ``--exclude`` patterns, ``--exclude-file`` files and ``--exclude-caches``.

        Pattern files hold one gitignore pattern per line (blank lines and lines starting
        with ``#`` are ignored; ``\\#`` escapes). They are read as UTF-8 with surrogateescape,
        so patterns can name non-UTF-8 file names. Raises ``UsageError`` if a file cannot be
        read or a pattern is invalid.
        """
        lines: List[str] = list(patterns)
        for f in pattern_files:
            try:
                with open(f, "rb") as fh:
                    raw = fh.read()
            except OSError as e:
                raise UsageError(f"cannot read exclude file {f}: {e.strerror or e}") from None
            for line in raw.decode("utf-8", "surrogateescape").split("\n"):
                lines.append(line[:-1] if line.endswith("\r") else line)
        return cls(lines, exclude_caches=exclude_caches)

    @property
    def has_patterns(self) -> bool:
        """Whether any pattern can exclude something."""
        return self._spec is not None

    def excluded(self, relpath: str, is_dir: bool, name: Optional[str] = None) -> bool:
        """Whether ``relpath`` (relative to its backup root, "/"-separated) is excluded by a pattern.

        ``name`` is the last component of ``relpath`` if the caller has it at hand. As in
        the walk, the parent directories are assumed not to be excluded themselves.
        """
        spec = self._spec
        if spec is None or not relpath:
            return False
        p = relpath + "/" if is_dir else relpath
        pre = self._prefilter
        if pre is not None and not pre.may_match(p, name if name is not None else relpath.rpartition("/")[2], is_dir):
            return False
        return bool(spec.match_file(p))


def _bad_pattern(patterns: Sequence[str]) -> str:
    """The message for the first pattern of ``patterns`` that pathspec cannot compile."""
    import pathspec
    for p in patterns:
        try:
            pathspec.GitIgnoreSpec.from_lines([p])
        except re.error as e:
            return f"invalid exclude pattern {p!r}: {e.msg}"
        except ValueError as e:
            return f"invalid exclude pattern {p!r}: {e}"
    return "invalid exclude patterns: " + ", ".join(map(repr, patterns))  # pragma: no cover - only together


_UNANCHORED = "^(?:.+/)?"
_DIR_SUFFIXES = ("(?:(?:/)|$)", "(?:/)")


class _Prefilter:
    """A fast "certainly not excluded" test: the union of the *including* patterns' regexes.

    Only an including pattern can exclude a path, so a path none of them matches is not
    excluded; matches are confirmed with the real ``GitIgnoreSpec``. Unanchored patterns
    without "/" (``*.o``, ``cache/``) are matched against the last component only, which
    avoids the backtracking of their ``^(?:.+/)?`` prefix on long paths.
    """

    __slots__ = ("names", "paths")

    def __init__(self, names, paths) -> None:
        self.names = names  # Optional[re.Pattern] on "name" or "name/"
        self.paths = paths  # Optional[re.Pattern] on the relative path (+ "/" for dirs)

    @classmethod
    def build(cls, patterns: Sequence["pathspec.Pattern"]) -> Optional["_Prefilter"]:
        name_parts: List[str] = []
        path_parts: List[str] = []
        for p in patterns:
            if not p.include:
                continue
            rx = getattr(p, "regex", None)
            src = getattr(rx, "pattern", None)
            if not isinstance(src, str):
                return None  # unknown pathspec internals: no prefilter, always ask the spec
            src = re.sub(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>", "(?:", src)
            body = src[len(_UNANCHORED):] if src.startswith(_UNANCHORED) else None
            if body is not None:
                core = body
                for suffix in _DIR_SUFFIXES:
                    if core.endswith(suffix):
                        core = core[: -len(suffix)]
                        break
                # Single-component pattern: apart from escaped characters and "[^/]", no "/",
                # nothing that could match "/" (".", classes) and no groups or alternation.
                rest = re.sub(r"\\.|\[\^/\]", "", core)
                if not any(c in rest for c in "/.[(|"):
                    name_parts.append("(?:%s)" % ("^" + body))
                    continue
            path_parts.append("(?:%s)" % src)
        try:
            names = re.compile("|".join(name_parts)) if name_parts else None
            paths = re.compile("|".join(path_parts)) if path_parts else None
        except re.error:  # pragma: no cover - unexpected pathspec regex dialect
            return None
        if names is None and paths is None:
            return None
        return cls(names, paths)

    def may_match(self, path: str, name: str, is_dir: bool) -> bool:
        """``path`` is the relative path with "/" appended for directories."""
        if self.names is not None and self.names.match(name + "/" if is_dir else name) is not None:
            return True
        return self.paths is not None and self.paths.match(path) is not None


def has_cache_tag(dirpath: str) -> bool:
    """Whether ``dirpath`` holds a valid CACHEDIR.TAG (a regular file, not a symlink)."""
    return _valid_tag(os.path.join(dirpath, CACHEDIR_TAG))


def _valid_tag(path: str, dir_fd: Optional[int] = None) -> bool:
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            data = b""
            while len(data) < len(CACHEDIR_SIGNATURE):
                chunk = os.read(fd, len(CACHEDIR_SIGNATURE) - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
    except OSError:
        return False
    return data == CACHEDIR_SIGNATURE


# ---------------------------------------------------------------- walking


class Entry:
    """One walked object: absolute ``path``, ``relpath`` under ``root`` ("" for the root), ``lstat``.

    ``dir_fd`` is a descriptor of the directory holding it (None for a root), valid until the walk
    moves on. ``at`` is how to reach it with the ``dir_fd=`` form of ``os`` functions: ``(path, None)``
    while the path fits in ``PATH_MAX`` (the calls everything else makes, which need no ``/proc`` for
    xattrs), else ``(name, dir_fd)``."""

    __slots__ = ("path", "relpath", "root", "st", "dir_fd")

    def __init__(self, path: str, relpath: str, root: str, st: os.stat_result,
                 dir_fd: Optional[int] = None) -> None:
        self.path = path
        self.relpath = relpath
        self.root = root
        self.st = st
        self.dir_fd = dir_fd

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.path

    @property
    def at(self) -> Tuple[str, Optional[int]]:
        if self.dir_fd is None or not self.beyond_path_max:
            return self.path, None
        return os.path.basename(self.path), self.dir_fd

    @property
    def beyond_path_max(self) -> bool:
        """Whether the path is too long to be passed to the kernel (reach it through ``at``)."""
        return len(os.fsencode(self.path)) >= PATH_MAX

    @property
    def is_dir(self) -> bool:
        return _S_ISDIR(self.st.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.st.st_mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)

    def __repr__(self) -> str:
        return f"Entry({self.path!r}, relpath={self.relpath!r}, mode={self.st.st_mode:o})"


def _normalize_root(root) -> str:
    p = os.path.abspath(os.fsdecode(root))
    if p.startswith("//"):  # POSIX keeps a leading "//"; Linux treats it as "/"
        p = "/" + p.lstrip("/")
    return p


class Walker:
    """Iterator over ``Entry`` objects; see ``walk``. After iteration, ``roots_missing`` lists
    roots that did not exist and ``error_count`` counts ``on_error`` calls."""

    def __init__(
        self,
        roots: Iterable[str],
        rules: Optional[ExcludeRules] = None,
        one_file_system: bool = False,
        on_error: Optional[OnError] = None,
    ) -> None:
        uniq = {_normalize_root(r) for r in roots}
        self.roots: List[str] = sorted(uniq, key=os.fsencode)
        self.rules = rules if rules is not None else ExcludeRules()
        self.one_file_system = one_file_system
        self.on_error = on_error
        self.roots_missing: List[str] = []
        self.roots_emptied: List[str] = []  # directories whose every entry the patterns excluded
        self.error_count = 0
        # A root inside another root is walked on its own (once), not as part of the outer one.
        self._nested = {
            r for r in self.roots
            if any(o != r and r.startswith(o if o.endswith("/") else o + "/") for o in self.roots)
        }
        self._gen = self._walk()

    def __iter__(self) -> Iterator[Entry]:
        return self._gen

    def __next__(self) -> Entry:
        return next(self._gen)

    def _error(self, path: str, exc: OSError) -> None:
        self.error_count += 1
        if self.on_error is not None:
            self.on_error(path, exc)

    def _open_dir(self, name: str, dir_fd: Optional[int], path: str, st: os.stat_result) -> Optional[int]:
        """A descriptor of the directory ``st`` describes, or None (reported) if it cannot be opened or
        is no longer that directory."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            self._error(path, e)
            return None
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            self._error(path, OSError(errno.ESTALE, "replaced by another directory during the walk", path))
            return None
        return fd

    def _list(self, fd: int, dirpath: str) -> Iterator["os.DirEntry[str]"]:
        """The entries of the directory open as ``fd`` in name-bytes order (CACHEDIR.TAG rule applied)."""
        ents: List["os.DirEntry[str]"] = []
        try:
            with os.scandir(fd) as it:
                ents.extend(it)
        except OSError as e:
            self._error(dirpath, e)  # keep what was listed before the error, if anything
        ents.sort(key=_name_key)
        if self.rules.exclude_caches:
            for de in ents:
                if de.name == CACHEDIR_TAG:
                    if _valid_tag(de.name, fd):
                        ents = [de]
                    break
        return iter(ents)

    def _walk(self) -> Iterator[Entry]:
        for root in self.roots:
            yield from self._walk_root(root)

    def _walk_root(self, root: str) -> Iterator[Entry]:
        try:
            st = os.lstat(root)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                self.roots_missing.append(root)
            self._error(root, e)
            return
        yield Entry(root, "", root, st)
        if not _S_ISDIR(st.st_mode):
            return
        fd = self._open_dir(root, None, root, st)
        if fd is None:
            return
        # (entries, relative prefix, descriptor, path prefix) of each directory the walk is inside
        stack: List[Tuple[Iterator["os.DirEntry[str]"], str, int, str]] = [
            (self._list(fd, root), "", fd, root.rstrip("/") + "/")]
        try:
            yield from self._walk_stack(root, st.st_dev, stack)
        finally:  # also when the consumer stops early
            for _it, _rel, dfd, _prefix in stack:
                os.close(dfd)

    def _walk_stack(self, root: str, root_dev: int, stack) -> Iterator[Entry]:
        one_fs = self.one_file_system
        rules = self.rules
        excluded = rules.excluded if rules.has_patterns else None
        nested = self._nested or None
        error = self._error
        dropped = kept = False
        while stack:
            it, relprefix, dfd, prefix = stack[-1]
            for de in it:
                name = de.name
                path = prefix + name
                if nested is not None and path in nested:
                    continue
                rel = relprefix + name
                if excluded is not None:
                    try:
                        isdir = de.is_dir(follow_symlinks=False)
                    except OSError:
                        isdir = False
                    if excluded(rel, isdir, name):
                        dropped = True
                        continue
                try:
                    st = de.stat(follow_symlinks=False)
                except OSError as e:
                    error(path, e)
                    continue
                kept = True
                yield Entry(path, rel, root, st, dfd)
                if _S_IFMT(st.st_mode) == _S_IFDIR and (not one_fs or st.st_dev == root_dev):
                    fd = self._open_dir(name, dfd, path, st)
                    if fd is not None:
                        stack.append((self._list(fd, path), rel + "/", fd, path + "/"))
                        break
            else:
                stack.pop()
                os.close(dfd)
        if dropped and not kept:
            self.roots_emptied.append(root)


def walk(
    roots: Iterable[str],
    rules: Optional[ExcludeRules] = None,
    one_file_system: bool = False,
    on_error: Optional[OnError] = None,
) -> Walker:
    """Walk ``roots`` depth-first, yielding an ``Entry`` for every object, roots included.

    Roots are made absolute (``os.path.abspath``, lexically), de-duplicated and walked in
    name-bytes order; a root nested in another is walked once, as its own root. A missing
    root is reported to ``on_error`` and recorded in ``Walker.roots_missing``; a directory root
    whose every entry the patterns excluded is recorded in ``Walker.roots_emptied``. With
    ``one_file_system`` a directory on another device than its root is yielded but not
    descended into (bind mounts and btrfs subvolumes count as other devices). An exception
    raised by ``on_error`` propagates and ends the walk.
    """
    return Walker(roots, rules, one_file_system, on_error)
