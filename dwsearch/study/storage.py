"""Where studies live: Optuna's real storages, opened with bounded waits and located errors.

* Default: one SQLite file per study, ``<study dir>/<name>.db``, where the study dir is
  ``$DWSEARCH_STUDY_DIR``, else ``$XDG_DATA_HOME/dwsearch/studies``, else
  ``~/.local/share/dwsearch/studies``. Nothing to install; good for one machine.
* ``postgresql://user:pass@host/db`` (or ``mysql://``): many workers on many machines.
* ``journal:///path/study.log``: Optuna's journal file, for several processes on one machine
  or on a shared file system where no database server is available.

This module imports optuna (the study package is the only one that does) but not torch.
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path
from typing import Any

from dwsearch.errors import StudyError, reason

__all__ = [
    "INFO_KEY",
    "RECORD_KEY",
    "STUDY_KEY",
    "default_study_dir",
    "describe_url",
    "lost_creation_race",
    "open_storage",
    "resolve_storage_url",
]

# Names of the attributes dwsearch keeps on Optuna studies and trials (see README, "Storage").
STUDY_KEY = "dwsearch"  # study user attr: {format, config, source, base, created, versions}
INFO_KEY = "dwsearch"  # trial user attr: {slot, repeat, seed, config, config_hash, role, ...}
RECORD_KEY = "record"  # trial user attr: the RunRecord as plain data
ERROR_KEY = "error"  # trial user attr: one line, why a trial failed

_SCHEMES = ("sqlite", "postgresql", "mysql", "journal")
# Seconds to wait for a database before saying it cannot be reached (bounded, never hangs).
CONNECT_TIMEOUT = 10
# SQLite: how long a writer waits for another's lock before "database is locked".
SQLITE_BUSY_TIMEOUT = 60


def default_study_dir() -> Path:
    """``$DWSEARCH_STUDY_DIR``, else ``$XDG_DATA_HOME/dwsearch/studies``, else
    ``~/.local/share/dwsearch/studies``. Not created here."""
    env = os.environ.get("DWSEARCH_STUDY_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "dwsearch" / "studies"
    return Path.home() / ".local" / "share" / "dwsearch" / "studies"


def describe_url(url: str) -> str:
    """The URL with any password replaced by ***, fit for messages and reports."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def resolve_storage_url(url: str | None, study_name: str) -> str:
    """The storage URL to use: ``url`` if given (checked), else the default SQLite file."""
    if url is None or url == "":
        return f"sqlite:///{default_study_dir() / f'{study_name}.db'}"
    if not isinstance(url, str):
        raise StudyError(f"storage: expected a URL string, found {url!r}")
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in _SCHEMES or ("://" not in url and scheme != "journal"):
        raise StudyError(
            f"storage {describe_url(url)!r}: unknown kind of storage; allowed: sqlite:///PATH, "
            f"postgresql://USER:PASS@HOST/DB, mysql://..., journal:///PATH"
        )
    return url


def _journal_path(url: str) -> Path:
    rest = url.split(":", 1)[1]
    if rest.startswith("///"):
        return Path(rest[2:])
    if rest.startswith("//"):
        raise StudyError(f"storage {url!r}: a journal URL is journal:///absolute/path or "
                         f"journal:relative/path")
    return Path(rest)


def _sqlite_path(url: str) -> Path | None:
    rest = url.split(":", 1)[1]
    if not rest.startswith("///") or rest[3:] in ("", ":memory:"):
        return None
    return Path(rest[3:])


def lost_creation_race(err: Exception) -> bool:
    """Whether ``err`` is another process creating the same database's tables at the same
    moment (workers started together on a fresh database): Optuna creates the schema without a
    lock, so the losers see 'table ... already exists' or a duplicate alembic version row."""
    return type(err).__name__ == "IntegrityError" or "already exists" in str(err)


def _create_rdb(url: str, engine: dict[str, Any], attempts: int = 8) -> Any:
    """``RDBStorage(url)``, retried (with jitter) while another worker creates the schema."""
    from optuna.storages import RDBStorage

    for attempt in range(attempts):
        try:
            return RDBStorage(url, engine_kwargs=engine)
        except Exception as err:
            if attempt == attempts - 1 or not lost_creation_race(err):
                raise
            time.sleep(0.05 * (attempt + 1) * (1 + random.random()))
    raise AssertionError("unreachable")


def open_storage(url: str, *, create: bool) -> Any:
    """An Optuna storage for ``url``. ``create=False`` (reports) refuses to make a new SQLite
    or journal file. Unreachable databases fail within :data:`CONNECT_TIMEOUT` seconds with
    one line naming the URL (password hidden)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = describe_url(url)
    if url.startswith("journal:"):
        path = _journal_path(url)
        if not create and not path.is_file():
            raise StudyError(f"storage {shown}: no such journal file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise StudyError(f"storage {shown}: cannot open the journal file "
                             f"({reason(err)})") from err
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        db = _sqlite_path(url)
        if db is not None:
            if not create and not db.is_file():
                raise StudyError(f"storage {shown}: no such SQLite file")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StudyError(f"storage {shown}: cannot create its folder "
                                 f"({reason(err)})") from err
        engine = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    elif url.startswith("postgresql") or url.startswith("mysql"):
        engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}, "pool_pre_ping": True}
    try:
        storage = _create_rdb(url, engine)
    except ImportError as err:
        raise StudyError(f"storage {shown}: its database driver is not installed ({err}); for "
                         f"PostgreSQL: pip install 'dwsearch[postgres]'") from err
    except Exception as err:  # SQLAlchemy's many connection errors: say which URL and why
        if type(err).__module__.startswith(("sqlalchemy", "optuna", "psycopg", "sqlite3")):
            raise StudyError(f"storage {shown}: cannot open ({reason(err, 200)})") from err
        raise
    if url.startswith("sqlite") and create and _sqlite_path(url) is not None:
        _serialize_sqlite(storage.engine)  # a file several workers may share (not :memory:)
    return storage


def _serialize_sqlite(engine: Any) -> None:
    """Make every transaction on this SQLite engine take the write lock when it begins.

    Optuna changes a trial's state with ``SELECT ... FOR UPDATE`` and then ``UPDATE``; SQLite
    has no row locks and Python's sqlite3 begins a transaction only at the first write, so two
    workers can both read a WAITING trial and both claim it (measured: 6 threads popping 60
    trials from one file claimed 26 of them twice). With ``BEGIN IMMEDIATE`` (SQLAlchemy's
    recipe for SQLite transactions) the read and the write are one step; others wait (up to
    the busy timeout). Only for workers: reading a study (reports) takes no write lock."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made while Optuna created the tables lack the hook
