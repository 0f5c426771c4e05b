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

import functools
import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

from dwsearch.errors import StudyError, reason
from dwsearch.urls import mask_url

__all__ = [
    "INFO_KEY",
    "RECORD_KEY",
    "STUDY_KEY",
    "default_study_dir",
    "describe_url",
    "lost_creation_race",
    "open_storage",
    "resolve_storage_url",
    "weights_folder",
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
    """The URL with its credentials replaced by ``***`` (a password after ``user:`` and
    secret query values such as ``?password=``): fit for messages, stored attributes and
    reports, which users commit and share. See :func:`dwsearch.urls.mask_url`."""
    return mask_url(url)


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


def weights_folder(url: str, study_name: str) -> Path:
    """Where a study's kept weights go by default: beside its SQLite or journal file
    (``<folder>/<file stem>-weights``; for the default storage ``<study dir>/<name>-weights``),
    and for a database server a folder of the study dir named after the study and the
    server's URL (password hidden), so studies of one name in two storages never share one."""
    import hashlib

    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    path = _journal_path(url) if scheme == "journal" else (
        _sqlite_path(url) if scheme == "sqlite" else None)
    if path is not None:
        return path.expanduser().absolute().parent / f"{path.stem}-weights"
    token = hashlib.sha256(describe_url(url).encode()).hexdigest()[:8]
    return default_study_dir() / f"{study_name}-{token}-weights"


def _journal_path(url: str) -> Path:
    rest = url.split(":", 1)[1]
    if rest.startswith("///"):
        return Path(rest[2:])
    if rest.startswith("//"):
        raise StudyError(f"storage {describe_url(url)!r}: a journal URL is "
                         f"journal:///absolute/path or journal:relative/path")
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


def is_in_memory(url: str) -> bool:
    """Whether ``url`` is an in-memory SQLite database (``sqlite://``, ``sqlite:///:memory:``):
    it lives and dies with one process."""
    return url.split(":", 1)[0].split("+", 1)[0].lower() == "sqlite" and (
        _sqlite_path(url) is None)


def _create_rdb(url: str, engine: dict[str, Any], attempts: int = 8, **kwargs: Any) -> Any:
    """``RDBStorage(url)``, retried (with jitter) while another worker creates the schema."""
    from optuna.storages import RDBStorage

    for attempt in range(attempts):
        try:
            return RDBStorage(url, engine_kwargs=engine, **kwargs)
        except Exception as err:
            if attempt == attempts - 1 or not lost_creation_race(err):
                raise
            time.sleep(0.05 * (attempt + 1) * (1 + random.random()))
    raise AssertionError("unreachable")


# The tables every Optuna RDB storage has; a SQLite file without them is not a study database.
_OPTUNA_TABLES = frozenset({"studies", "trials", "version_info", "alembic_version"})


@functools.lru_cache(maxsize=1)
def _optuna_schema() -> tuple[str, list[str]]:
    """(head revision, every known revision) of this Optuna's storage schema."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from optuna.storages._rdb import storage as rdb

    folder = Path(rdb.__file__).parent
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder / "alembic").replace("%", "%%"))
    script = ScriptDirectory.from_config(config)
    return str(script.get_current_head()), [r.revision for r in script.walk_revisions()]


def _check_sqlite_file(db: Path, shown: str, *, write: bool) -> None:
    """Look into a SQLite file with the standard library, read-only, before Optuna touches it:
    Optuna would add its 14 tables to any file (another program's database, an empty file)
    and a newer schema's tables to an older study. A folder, another program's database, an
    older or newer Optuna schema, or a read-only file for writing: one line each."""
    import sqlite3
    from urllib.parse import quote

    if db.is_dir():
        raise StudyError(f"storage {shown}: is a folder, not a SQLite file")
    if not db.is_file():
        return
    if write and not os.access(db, os.W_OK):
        raise StudyError(f"storage {shown}: the file is read-only, and a study writes every "
                         f"trial into it; make it writable, or copy it and pass the copy")
    if write and not os.access(db.parent if str(db.parent) else Path("."), os.W_OK | os.X_OK):
        raise StudyError(f"storage {shown}: its folder {db.parent} is read-only (SQLite keeps "
                         f"its journal beside the file); move the file or make it writable")
    if db.stat().st_size == 0:
        if write:
            return  # an empty file given on purpose: the study's database starts here
        raise StudyError(f"storage {shown}: the file is empty (no study has been stored there)")
    try:
        connection = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True,
                                     timeout=SQLITE_BUSY_TIMEOUT)
        try:
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = None
            if "alembic_version" in tables:
                row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = row[0] if row else None
            library = None
            if "version_info" in tables:
                row = connection.execute("SELECT library_version FROM version_info").fetchone()
                library = row[0] if row else None
        finally:
            connection.close()
    except sqlite3.Error as err:
        raise StudyError(f"storage {shown}: not a readable SQLite database "
                         f"({reason(err)})") from err
    if write and tables <= _all_optuna_tables() and not tables >= _OPTUNA_TABLES:
        return  # a study database being created this instant by another worker (or never
        # finished): Optuna completes its schema, nothing else is in the file
    if not tables >= _OPTUNA_TABLES:
        found = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
        raise StudyError(f"storage {shown}: not an Optuna study database (its tables: "
                         f"{found or 'none'}); it was left unchanged: give a study's file, or "
                         f"a new path for a new study")
    _check_revision(revision, library, shown)


def _all_optuna_tables() -> set[str]:
    from optuna.storages._rdb import models

    return set(models.BaseModel.metadata.tables) | {"alembic_version"}


def _check_revision(revision: str | None, library: str | None, shown: str) -> None:
    import optuna

    head, known = _optuna_schema()
    if revision == head:
        return
    made_by = f"optuna {library}" if library else "another Optuna"
    if revision in known or revision is None:
        raise StudyError(f"storage {shown}: written by {made_by}, an older storage schema than "
                         f"this optuna {optuna.__version__} reads; upgrade it once (back it up "
                         f"first): optuna storage upgrade --storage URL")
    raise StudyError(f"storage {shown}: written by {made_by} (schema {revision}, unknown to "
                     f"this optuna {optuna.__version__}); upgrade optuna: "
                     f"pip install -U optuna")


def _read_only_sqlite(db: Path) -> dict[str, Any]:
    """Engine arguments that open ``db`` read-only: a report never changes the file."""
    import sqlite3
    from urllib.parse import quote

    uri = f"file:{quote(str(db.resolve()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT,
                               check_same_thread=False)

    return {"creator": connect}


# How far back from its end a journal is read to find its last complete line.
_TAIL_CHUNK = 1 << 20


def _open_journal(path: Path, shown: str, *, create: bool, readonly: bool) -> Any:
    """Optuna's journal file storage. For writing, a journal whose last write was cut short
    (a crash or a full disk mid-line) is mended first, under the journal's own lock: the torn
    bytes were never a record Optuna read, and appending after them would glue the next record
    to them and make every later line unreadable. They are kept in ``PATH.torn``."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if path.is_dir():
        raise StudyError(f"storage {shown}: is a folder, not a journal file")
    if not path.is_file():
        if not create:
            raise StudyError(f"storage {shown}: no such journal file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StudyError(f"storage {shown}: cannot create its folder "
                             f"({reason(err)})") from err
    elif not readonly:
        if not os.access(path, os.W_OK):
            raise StudyError(f"storage {shown}: the journal is read-only, and a study writes "
                             f"every trial into it; make it writable, or copy it")
        _mend_torn_tail(path, shown)
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise StudyError(f"storage {shown}: cannot open the journal file "
                         f"({reason(err)})") from err
    except ValueError as err:  # json.JSONDecodeError too: a line that is not a record
        line, text = _first_bad_line(path)
        raise StudyError(f"storage {shown}: line {line} is not a journal record "
                         f"({text!r}); Optuna cannot read past it: move that line out of the "
                         f"file (back it up first)") from err


def _mend_torn_tail(path: Path, shown: str) -> None:
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        with open(path, "r+b") as file:
            size = file.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_CHUNK)
            file.seek(start)
            tail = file.read()
            complete = tail.endswith(b"\n")
            cut = tail.rfind(b"\n", 0, len(tail) - 1 if complete else len(tail))
            if cut < 0 and start > 0:
                return  # a last line longer than the chunk: leave it to Optuna's reader
            end = start + cut + 1  # where the last line begins
            if complete and _is_record(tail[cut + 1:]):
                return
            if end == size:
                return
            file.seek(end)
            torn = file.read()
            aside = path.with_name(path.name + ".torn")
            with open(aside, "ab") as out:
                out.write(torn if torn.endswith(b"\n") else torn + b"\n")
                out.flush()
                os.fsync(out.fileno())
            file.truncate(end)
            file.flush()
            os.fsync(file.fileno())
    except OSError as err:
        raise StudyError(f"storage {shown}: cannot mend the journal's torn last line "
                         f"({reason(err)})") from err
    finally:
        lock.release()
    warnings.warn(f"storage {shown}: the journal's last write was cut short ({len(torn)} "
                  f"bytes, never part of the study); moved to {aside}", stacklevel=3)


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _first_bad_line(path: Path) -> tuple[int, str]:
    """(1-based number, first characters) of the first line Optuna cannot read."""
    with open(path, "rb") as file:
        number = 0
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n") or not _is_record(line):
                return number, line[:40].decode("utf-8", "replace")
    return number, ""


def open_storage(url: str, *, create: bool, readonly: bool = False) -> Any:
    """An Optuna storage for ``url``.

    * ``create``: a new SQLite or journal file may be made (``run-study``); without it the
      file must exist (worker processes, reports).
    * ``readonly``: for reading a study (reports): SQLite files are opened read-only and
      nothing, not even Optuna's tables, is written anywhere. Otherwise the storage is a
      worker's: SQLite transactions take the write lock first (see :func:`_serialize_sqlite`)
      and a journal torn by a crash is mended before anything is appended.

    A file that is not a study database (another program's, a folder, an older or newer Optuna
    schema, read-only for writing) is one line and stays unchanged. Unreachable databases fail
    within :data:`CONNECT_TIMEOUT` seconds with one line naming the URL (password hidden)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = describe_url(url)
    if url.startswith("journal:"):
        return _open_journal(_journal_path(url), shown, create=create and not readonly,
                             readonly=readonly)
    engine: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    db = _sqlite_path(url) if url.startswith("sqlite") else None
    if url.startswith("sqlite"):
        if db is not None:
            if (readonly or not create) and not db.exists():
                raise StudyError(f"storage {shown}: no such SQLite file")
            _check_sqlite_file(db, shown, write=not readonly)
            if not readonly:
                try:
                    db.parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise StudyError(f"storage {shown}: cannot create its folder "
                                     f"({reason(err)})") from err
        engine = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
        if readonly and db is not None:
            engine = _read_only_sqlite(db)
            kwargs = {"skip_table_creation": True}
    elif url.startswith("postgresql") or url.startswith("mysql"):
        engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}, "pool_pre_ping": True}
    try:
        storage = _create_rdb(url, engine, **kwargs)
    except ImportError as err:
        raise StudyError(f"storage {shown}: its database driver is not installed ({err}); for "
                         f"PostgreSQL: pip install 'dwsearch[postgres]'") from err
    except RuntimeError as err:  # Optuna's schema check: an older or newer storage schema
        if "optuna" in str(err) and "compatible" in str(err):
            raise StudyError(f"storage {shown}: {_schema_advice(str(err))}") from err
        raise
    except Exception as err:  # SQLAlchemy's many connection errors: say which URL and why
        if type(err).__module__.startswith(("sqlalchemy", "optuna", "psycopg", "sqlite3")):
            if "readonly" in str(err) or "read-only" in str(err):
                raise StudyError(f"storage {shown}: read-only, and a study writes every trial "
                                 f"into it ({reason(err, 120)})") from err
            raise StudyError(f"storage {shown}: cannot open ({reason(err, 200)})") from err
        raise
    if db is not None and not readonly:
        _serialize_sqlite(storage.engine)  # a file several workers may share (not :memory:)
    return storage


def _schema_advice(message: str) -> str:
    if "optuna storage upgrade" in message:
        return (f"{message.split('. ')[0]}; upgrade it once (back it up first): "
                f"optuna storage upgrade --storage URL")
    return f"{message.split('. ')[0]}; upgrade optuna: pip install -U optuna"


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
