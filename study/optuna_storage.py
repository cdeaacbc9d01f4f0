"""Where a study's trials are recorded for Optuna: `search.storage` in the spec.

- "" (the default): a journal file, `<study>/optuna.journal` for a local
  storage; for an object-store study the driver keeps it in
  `$WSSS_CACHE/optuna/` and copies it to `<study>/optuna.journal` whenever a
  trial finishes (study.optuna_log).
- an RDB URL (`sqlite:///studies.db`, `postgresql://user@host/db`,
  `mysql+pymysql://user@host/db`): Optuna's RDBStorage. Records land there as
  they happen, so `optuna-dashboard URL` shows a running study live, and one
  database holds every study of a lab.
- any other text: a journal file path (Optuna's JournalStorage), for a shared
  file system.
The Optuna study's name is the study's name. A relative sqlite or journal
path is made absolute when the spec is loaded (the recorded spec then means
the same file wherever `resume` or `report` runs). A URL names no password:
the spec is saved beside the study, so a password is written `${VARIABLE}`
and read from the environment when the storage is opened (or left to the
driver's own files: ~/.pgpass, option files).

No Ray here: `analysis` reads the storage too.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs as pafs
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import SQLAlchemyError

from study.store import resolve

JOURNAL_NAME = "optuna.journal"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ALLOWED = ("an RDB URL (sqlite:///file.db, postgresql://user@host/db, mysql://user@host/db) "
           "or a journal file path; empty: the study's own optuna.journal")


class StorageError(ValueError):
    """A storage that cannot be used; one line for the user."""


def direction(mode: str) -> str:
    """Optuna's study direction of a spec's search.mode ("max"/"min")."""
    return "maximize" if mode == "max" else "minimize"


def is_url(storage: str) -> bool:
    return "://" in storage


def check_storage(storage: str) -> str:
    """`storage` validated and made absolute (see module doc); StorageError if not allowed."""
    if not storage:
        return storage
    if not is_url(storage):
        return str(Path(storage).expanduser().resolve())
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(storage)
        url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        raise StorageError(f"search.storage={storage!r} is invalid; allowed: {ALLOWED}") from None
    if url.password is not None and not VARIABLE.fullmatch(str(url.password)):
        raise StorageError("search.storage names a password; allowed: ${VARIABLE} in its place, read from the "
                           "environment (the spec is saved beside the study), or the database driver's own files")
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" and "${" not in url.database:
        return storage.replace(url.database, str(Path(url.database).expanduser().resolve()), 1)
    return storage


def open_storage(storage: str) -> BaseStorage:
    """The Optuna storage named by a checked `storage` (not ""): RDB for a URL, else a journal file."""
    if not is_url(storage):
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(storage))
    if VARIABLE.search(storage):
        return EnvironmentRDBStorage(storage)
    return RDBStorage(storage)


@contextlib.contextmanager
def reading_storage(study_uri: str, storage: str) -> Iterator[BaseStorage | None]:
    """The Optuna storage of the study at `study_uri` (a folder or URI) whose
    spec names `storage`: that storage, else the study's own journal (an
    object store's copied to a temporary file for the block); None when the
    study has no journal."""
    if storage:
        yield open_storage(storage)
        return
    filesystem, root = resolve(study_uri)
    journal = f"{root}/{JOURNAL_NAME}"
    if filesystem.get_file_info(journal).type != pafs.FileType.File:
        yield None
        return
    if isinstance(filesystem, pafs.LocalFileSystem):
        yield JournalStorage(JournalFileBackend(journal))
        return
    handle, copy = tempfile.mkstemp(suffix=f"-{JOURNAL_NAME}")
    try:
        with os.fdopen(handle, "wb") as target, filesystem.open_input_stream(journal) as source:
            target.write(source.read())
        yield JournalStorage(JournalFileBackend(copy))
    finally:
        os.unlink(copy)


def expand(template: str) -> str:
    """`template` with each ${VARIABLE} replaced by its value; StorageError if one is unset."""
    missing = [name for name in VARIABLE.findall(template) if name not in os.environ]
    if missing:
        raise StorageError(f"search.storage needs the environment variable {missing[0]}; allowed: set it on the driver")
    return VARIABLE.sub(lambda match: os.environ[match.group(1)], template)


class EnvironmentRDBStorage(RDBStorage):
    """RDBStorage whose URL holds ${VARIABLE}s: the expanded URL is used, and
    the template is what pickles (Tune saves its searcher, storage included,
    beside the study), so the secret is read again where it is unpickled."""

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(expand(template))

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "url": self.template}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({**state, "url": expand(state["template"])})


def create_optuna_study(storage: str, name: str, direction: str, *, resume: bool) -> None:
    """Create the study `name` in `storage` (a fresh run refuses one that exists;
    a resume continues it); StorageError, one line, if the storage cannot be opened."""
    try:
        opened = open_storage(storage)
        if not resume and _has_study(opened, name):
            raise StorageError(f"Optuna study {name!r} already exists in search.storage {storage}; allowed: "
                               "another --name, or delete it first (optuna delete-study)")
        _quiet_create(opened, name, direction)
    except StorageError:
        raise
    except (SQLAlchemyError, ImportError, OSError, RuntimeError, ValueError) as error:  # driver, server, schema
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StorageError(f"search.storage {storage} cannot be opened: {reason}") from None


def _has_study(storage: BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def _quiet_create(storage: BaseStorage, name: str, direction: str) -> None:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    finally:
        optuna.logging.set_verbosity(verbosity)

