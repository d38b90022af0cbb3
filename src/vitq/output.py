"""The one place that writes run folders and output files, so that a run never destroys what it did not write.

* :func:`check_output` / :func:`check_writable`: everything that can be checked about an output before any work
  (calibration takes minutes; a refusal must come first): it exists without ``--force``, ``--force`` would
  replace something that is not an earlier run (the current folder, the home folder, ``/``, a folder of the
  user's files), or the path cannot be created or written.
* :func:`staged_output`: a run folder is written into a hidden sibling and swapped in only when complete.
* :func:`atomic_file`: a single output file (an ONNX export) is written to a hidden temporary file and renamed.

Any ``OSError`` while writing (a full disk, a quota, a removed folder) becomes a one-line :class:`VitqError`
and leaves nothing behind: no partial folder or file, no folder created on the way, and the replaced output,
if any, untouched.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import VitqError

# a folder holding one of these was written by vitq (quantize/save: vitq.json, analyze: analysis.json)
RUN_MARKERS = ("vitq.json", "analysis.json")


def _abs(path) -> Path:
    """``path`` made absolute without resolving symlinks (``..`` is collapsed)."""
    return Path(os.path.abspath(path))


def _exists(path: Path) -> bool:
    """True for anything at ``path``, a dangling symlink included."""
    return os.path.lexists(path)


def _hidden_sibling(path: Path, kind: str) -> Path:
    """A fresh hidden name beside ``path``: ``.NAME.<kind>-<random>`` (never clashes with a parallel run)."""
    return path.parent / f".{path.name}.{kind}-{secrets.token_hex(4)}"


def _remove(path: Path) -> None:
    """Delete a file, symlink or folder we created; best effort (used while cleaning up after a failure)."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created, outermost first, so that a
    failed run can remove exactly those (see :func:`_remove_dirs`)."""
    missing = []
    while not _exists(folder):
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
    except OSError as e:
        _remove_dirs(created)
        raise write_error(e, missing[0]) from e
    return created


def _remove_dirs(created: list[Path]) -> None:
    """Remove the folders :func:`_make_dirs` created, innermost first, as long as they are empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


def write_error(e: OSError, target) -> VitqError:
    """The one-line :class:`VitqError` for an ``OSError`` raised while writing ``target``."""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return VitqError(f"no space left on device while writing {target}")
    what = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
    where = f" ({e.filename})" if e.filename else ""
    return VitqError(f"could not write {target}: {what}{where}")


def check_writable(out) -> None:
    """Refuse, before any work, an output path that cannot be created: the nearest existing folder above ``out``
    must be a writable directory (checked with ``os.access`` and by creating and removing a temporary file
    there), and no component of the path may be an existing file (``--out notes.txt/run``). Creates nothing
    that remains."""
    out = _abs(out)
    folder = out.parent
    while not _exists(folder):
        folder = folder.parent
    if not folder.is_dir():
        raise VitqError(f"cannot create {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VitqError(f"cannot write to {folder}: permission denied")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vitq-write-test-"):
            pass
    except OSError as e:
        raise VitqError(f"cannot write to {folder}: {e.strerror or type(e).__name__}") from e


def check_replaceable(out) -> None:
    """Refuse to let ``--force`` replace ``out`` unless it is an earlier vitq run folder (it holds ``vitq.json``
    or ``analysis.json``) or an empty folder. Never replaced, whatever they hold: the current folder, the home
    folder, the filesystem root or any folder above the current one; nor a plain file."""
    out = Path(out)
    target, cwd = out.resolve(), Path.cwd().resolve()
    protected = {Path(target.anchor): "the filesystem root", Path.home().resolve(): "the home folder",
                 cwd: "the current folder"}
    if target in protected or target in cwd.parents:
        what = protected.get(target, "a folder above the current one")
        raise VitqError(f"refusing to replace {out}: it is {what} (give --out a new folder)")
    if not out.is_dir():
        raise VitqError(f"refusing to replace {out}: it is a file, not a vitq run folder")
    try:
        names = {p.name for p in out.iterdir()}
    except OSError as e:
        raise VitqError(f"cannot read {out}: {e.strerror or type(e).__name__}") from e
    if names and not names & set(RUN_MARKERS):
        raise VitqError(f"refusing to replace {out}: it is not a vitq run folder (no {RUN_MARKERS[0]}); "
                        f"give --out a new folder")


def check_output(out, force: bool = False) -> Path:
    """Every check on a run folder ``out`` that can be made before any work: it must not exist unless ``force``,
    and then only as a replaceable run folder (:func:`check_replaceable`); its location must be writable
    (:func:`check_writable`). Returns ``out`` as a :class:`Path`."""
    out = Path(out)
    if _exists(out):
        if not force:
            raise VitqError(f"{out} already exists (use --force to replace it)")
        check_replaceable(out)
    check_writable(out)
    return out


@contextmanager
def staged_output(out, force: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder ``.NAME.partial-<random>`` beside ``out`` to write a run into; when the block
    succeeds it becomes ``out``, otherwise it is removed with any parent folders created for it.

    An existing ``out`` is replaced only with ``force`` and only if it is an earlier run (:func:`check_output`):
    it is first renamed aside to ``.NAME.old-<random>``, the new folder is renamed in, and only then is the old one
    deleted, so a failure at any point leaves the user's folder as it was. An ``OSError`` in the block (a full
    disk) becomes a one-line :class:`VitqError`.
    """
    shown = check_output(out, force)
    out = _abs(shown)
    created = _make_dirs(out.parent)
    tmp = _hidden_sibling(out, "partial")
    try:
        try:
            tmp.mkdir()
            yield tmp
        except OSError as e:
            raise write_error(e, shown) from e
        _swap_in(tmp, out, shown)
    except BaseException:
        _remove(tmp)
        _remove_dirs(created)
        raise


def _swap_in(new: Path, out: Path, shown) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and deleted only once ``new`` is in
    place (it is put back if the rename fails)."""
    try:
        if not _exists(out):
            os.rename(new, out)
            return
        old = _hidden_sibling(out, "old")
        os.rename(out, old)
        try:
            os.rename(new, out)
        except OSError:
            os.rename(old, out)
            raise
    except OSError as e:
        raise write_error(e, shown) from e
    _remove(old)


@contextmanager
def atomic_file(path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary file name to write the output file ``path`` to; ``path`` appears, whole, only when the
    block succeeds. An existing file is replaced only with ``force`` (a folder never is).

    The temporary file ``.NAME.partial-<random>SUFFIX`` lives in the nearest existing folder above ``path``, and
    missing parent folders are created only after the block succeeds (and removed if the final rename fails), so
    a refused or failed write leaves no empty folders behind. An ``OSError`` in the block becomes a one-line
    :class:`VitqError`.
    """
    shown = Path(path)
    path = _abs(path)
    if _exists(shown):
        if not force:
            raise VitqError(f"{shown} already exists (use --force to replace it)")
        if path.is_dir():
            raise VitqError(f"refusing to replace {shown}: it is a folder (give a file name, e.g. model.onnx)")
    check_writable(path)
    folder = path.parent
    while not _exists(folder):
        folder = folder.parent
    tmp = folder / f".{path.name}.partial-{secrets.token_hex(4)}{path.suffix}"
    created: list[Path] = []
    try:
        try:
            yield tmp
        except OSError as e:
            raise write_error(e, shown) from e
        created = _make_dirs(path.parent)
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(e, shown) from e
    except BaseException:
        _remove(tmp)
        _remove_dirs(created)
        raise
