"""Where a study lives: a journal file (a path; the default) or a database (an SQLAlchemy URL).

A journal file (``optuna.storages.JournalStorage`` over ``JournalFileBackend``) needs no server; its writers take
a lock file beside it (``<file>.lock``, a symlink made atomically, which works on NFS too; a lock left by a killed
writer is broken after 30 s). A database URL (``postgresql+psycopg2://user@host:port/db``, ``mysql+pymysql://...``)
goes through ``optuna.storages.RDBStorage``. Dead workers are found alike in both (:mod:`.liveness`). SQLite is refused for more than one worker.
"""

from __future__ import annotations

import errno
import json
import random
import stat
import time
from pathlib import Path

import optuna

from ..files import check_folder_path
from .liveness import Liveness

#: Tries at opening a database whose tables another worker may be creating at the same moment.
_SCHEMA_ATTEMPTS = 5


def is_url(storage: str) -> bool:
    """A database URL (``scheme://...``) rather than a journal file path."""
    return "://" in storage


def open_storage(storage: str, *, workers: int = 1, heartbeat_interval: int = 10, grace_period: int = 60,
                 max_retry: int | None = 2, must_exist: bool = False) -> tuple[optuna.storages.BaseStorage, Liveness]:
    """The Optuna storage behind ``storage`` and how its dead workers are found (see :mod:`.liveness`).

    ``workers``: how many workers will share the study (SQLite is refused for more than one).
    ``must_exist``: refuse a journal file or SQLite database that does not exist (reading a study) instead of
    creating it."""
    if not isinstance(storage, str) or not storage:
        raise ValueError(f"storage must be a journal file path or a database URL, got {storage!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if heartbeat_interval < 1 or grace_period <= heartbeat_interval:
        raise ValueError(f"heartbeat: interval must be >= 1 s and grace > interval, got interval {heartbeat_interval}, "
                         f"grace {grace_period}")
    if is_url(storage):
        return _rdb(storage, workers, heartbeat_interval, grace_period, max_retry, must_exist)
    path = Path(storage)
    if path.is_dir():
        raise ValueError(f"storage '{storage}' is a folder; give a journal file path (e.g. {path / 'study.journal'})")
    if must_exist and not path.is_file():
        raise FileNotFoundError(f"journal file '{storage}' does not exist")
    if path.is_file():
        _require_journal(path)
    lock = path.with_name(path.name + ".lock")
    try:  # one look (another worker may release its lock meanwhile): Optuna's lock is a symlink, broken when stale
        kind = lock.lstat().st_mode
    except OSError as err:  # none there, or a path through a file (named below), as Path.exists() takes them
        if err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF):
            raise
        kind = None
    if kind is not None and not stat.S_ISLNK(kind):
        raise ValueError(f"'{lock}' is a {'folder' if stat.S_ISDIR(kind) else 'file'}, where the writers of journal "
                         f"'{storage}' take their lock (a symbolic link): it is never removed; move it away")
    check_folder_path(path.parent, f"the folder of --storage '{storage}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend), Liveness(heartbeat_interval, grace_period, max_retry)


def _require_journal(path: Path) -> None:
    """ValueError naming ``path`` unless it is empty or its first line is a journal record (a JSON object with an
    ``op_code``): Optuna would append its records to any file, and then fail reading it; or unless each of its
    complete lines is JSON (a damaged journal: a stray write; Optuna's error names no file, and it would write first).
    The last line may lack its newline: another worker may be writing it."""
    with open(path, "rb") as handle:
        first = handle.readline()
        if not first:
            return
        try:
            record = json.loads(first)
        except ValueError:
            record = None
        if not (isinstance(record, dict) and "op_code" in record):
            raise ValueError(f"storage '{path}' is not an Optuna journal file (its first line is no journal record): "
                             "it is left as it is; give the path of a new file, or of a journal a sweep wrote")
        for number, line in enumerate(handle, start=2):
            if not line.endswith(b"\n"):
                break
            try:
                json.loads(line)
            except ValueError as err:
                raise ValueError(f"storage '{path}': line {number} is not a journal record ({err}): the journal is "
                                 "damaged (a stray write?); it is left as it is: remove that line from a copy, or "
                                 "start a new journal") from None


def _sqlite_file(url: str) -> str | None:
    """The database file of an ``sqlite:`` URL, ``""`` for an in-memory one; None for another database or a malformed
    URL (which opening it refuses)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    return "" if parsed.database in (None, "", ":memory:") else parsed.database


def _rdb(url: str, workers: int, interval: int, grace: int, max_retry: int | None, must_exist: bool = False):
    scheme = url.split("://", 1)[0]
    if scheme.split("+")[0] == "sqlite" and workers > 1:
        raise ValueError(
            f"storage '{url}': SQLite cannot be shared by {workers} workers: it locks the whole database for every "
            "write, so concurrent workers fail with 'database is locked', and its file locks are unreliable on NFS. "
            "Use a journal file (a path such as sweeps/study.journal) or a PostgreSQL/MySQL URL "
            "(postgresql+psycopg2://user@host:port/db) instead"
        )
    database = _sqlite_file(url)
    if database == "":
        raise ValueError(f"storage '{url}' is an in-memory SQLite database: the study would be lost when this process "
                         "exits (no other worker could join it, nothing could be exported); give a journal file path "
                         "(e.g. sweeps/study.journal) or sqlite:///<file>")
    if must_exist and database and not Path(database).is_file():
        raise FileNotFoundError(f"storage '{url}': its SQLite database '{database}' does not exist")
    engine_kwargs = {} if scheme.startswith("sqlite") else {"pool_pre_ping": True}
    import sqlalchemy.exc

    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
            return rdb, Liveness(interval, grace, max_retry)
        except ImportError as err:  # Optuna re-raises the driver's ModuleNotFoundError as an ImportError
            missing = err if isinstance(err, ModuleNotFoundError) else err.__cause__ or err.__context__
            name = getattr(missing, "name", None) or scheme.partition("+")[2] or scheme
            raise ValueError(f"storage '{url}' needs the database driver '{name}' (for PostgreSQL: "
                             "pip install psycopg2-binary; for MySQL: pip install pymysql)") from None
        except (sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError) as err:
            raise ValueError(f"storage '{url}' is no database URL SQLAlchemy can open ({err}); expected e.g. "
                             "postgresql+psycopg2://user@host:port/db, or a journal file path") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers starting together on an empty database all create Optuna's tables; PostgreSQL lets one
            # win and fails the others ('duplicate key ... pg_type_typname_nsp_index'). Try again: the tables
            # are there now.
            if attempt == _SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.2, 1.0))
        except sqlalchemy.exc.DatabaseError as err:  # not a database, a file that cannot be opened, no server
            raise ValueError(f"storage '{url}' cannot be opened as a database: {err.orig or err}") from None
    raise AssertionError("unreachable")


def open_study(storage: str, study_name: str, *, workers: int = 1, create: bool = True, sampler=None, pruner=None,
               heartbeat_interval: int = 10, grace_period: int = 60, max_retry: int | None = 2) -> optuna.Study:
    """The study ``study_name`` (maximised) in ``storage`` (journal file path or database URL); created if absent
    and ``create``. A worker also needs the study's :class:`~.liveness.Liveness`: see :func:`open_sweep`."""
    return open_sweep(storage, study_name, workers=workers, create=create, sampler=sampler, pruner=pruner,
                      heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry)[0]


def open_sweep(storage: str, study_name: str, *, workers: int = 1, create: bool = True, sampler=None, pruner=None,
               heartbeat_interval: int = 10, grace_period: int = 60,
               max_retry: int | None = 2) -> tuple[optuna.Study, Liveness]:
    """:func:`open_study` and the study's :class:`~.liveness.Liveness` (heartbeats and dead-worker recovery)."""
    backend, liveness = open_storage(storage, workers=workers, heartbeat_interval=heartbeat_interval,
                                     grace_period=grace_period, max_retry=max_retry, must_exist=not create)
    if create:
        study = optuna.create_study(storage=backend, study_name=study_name, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    else:
        try:
            study = optuna.load_study(study_name=study_name, storage=backend, sampler=sampler, pruner=pruner)
        except KeyError:
            names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
            raise ValueError(f"storage '{storage}' has no study named {study_name!r}; it has {names}") from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"study {study_name!r} in '{storage}' minimises; a sweep maximises the validation score")
    return study, liveness
