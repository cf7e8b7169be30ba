"""Build the FireWorks LaunchPad and the jobflow JobStore from settings.

Two backends:

* ``mongodb``: ``launchpad_configs/my_launchpad.yaml`` and a jobflow config with a MongoStore
  for documents and a GridFSStore for big objects; ``${VAR}`` in either file is filled from
  the environment so passwords stay out of the repository, specs and job documents.
* ``embedded`` (default, no server): FireWorks' own mongomock mode for the LaunchPad (one
  JSON file) and maggma MontyStores on sqlite for the JobStore.  mongomock keeps the whole
  queue in memory and has no locking, so one process at a time may hold the queue
  (:func:`open_queue`), serving it to its workers; it writes the file atomically after every
  change (:class:`ilflows.store.launchpad.EmbeddedLaunchPad`), and nothing else ever writes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from ilflows.settings import IlflowsSettings, get_settings

_ENV_REF = re.compile(r"\$\{(\w+)\}")
JOBSTORE_INDEXES = ["output.kind", "output.campaign", "output.iteration", "output.frame_id"]
NEAR_LIMIT = 0.8  # fraction of an embedded limit at which `ilflows status` starts warning
# FireWorks worker name that every campaign job is pinned to (spec._fworker): only ilflows'
# workers, whose LaunchPad never queues a job twice, take them; a plain rlaunch finds none.
WORKER_NAME = "ilflows"


class StoreBusyError(RuntimeError):
    """The embedded queue is held by another process."""


class StoreConfigError(RuntimeError):
    """A store configuration file is missing or names an unset environment variable."""


def queue_file(settings: IlflowsSettings) -> Path:
    """Return the embedded LaunchPad file."""
    return (settings.home / "launchpad.json").resolve()


def prepare_fireworks(settings: IlflowsSettings | None = None) -> None:
    """Point FireWorks at the embedded queue file; call before anything imports fireworks.

    FireWorks picks mongomock or pymongo once, when ``fireworks.fw_config`` is first imported,
    from ``MONGOMOCK_SERVERSTORE_FILE``.
    """
    settings = settings or get_settings()
    embedded = settings.backend == "embedded"
    if embedded:
        os.environ["MONGOMOCK_SERVERSTORE_FILE"] = str(queue_file(settings))
    elif "MONGOMOCK_SERVERSTORE_FILE" in os.environ and "fireworks.fw_config" not in sys.modules:
        del os.environ["MONGOMOCK_SERVERSTORE_FILE"]
    if "fireworks.fw_config" in sys.modules:
        import fireworks.fw_config as fw_config

        if bool(fw_config.MONGOMOCK_SERVERSTORE_FILE) != embedded:
            raise RuntimeError(
                "fireworks was imported before ilflows chose its backend; "
                "call ilflows.store.prepare_fireworks() first"
            )


def _fill_env(value, source: Path):
    """Replace ``${VAR}`` in the string values of a parsed config (comments are never touched)."""
    if isinstance(value, dict):
        filled = {k: _fill_env(v, source) for k, v in value.items()}
        if isinstance(filled.get("port"), str):  # "${PORT}" arrives as text
            if not filled["port"].isdigit():
                raise StoreConfigError(
                    f"{source}: port {filled['port']!r} is not a number; set ILFLOWS_MONGO_PORT (or the port "
                    "in that file) to the server's port, e.g. 27017"
                )
            filled["port"] = int(filled["port"])
        return filled
    if isinstance(value, list):
        return [_fill_env(v, source) for v in value]
    if not isinstance(value, str):
        return value

    def env(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise StoreConfigError(
                f"{source}: environment variable {name} is not set; export it before running"
            )
        return os.environ[name]

    return _ENV_REF.sub(env, value)


def _read_config(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise StoreConfigError(
            f"{path} not found; copy it from launchpad_configs/ or set ILFLOWS_BACKEND=embedded"
        )
    return _fill_env(yaml.safe_load(path.read_text()), path)


def get_launchpad(settings: IlflowsSettings | None = None):
    """Return the configured LaunchPad for reading (never connects by itself).

    On the embedded queue it refuses writes and rereads the file when another process saved it;
    write through :func:`open_queue`.
    """
    settings = settings or get_settings()
    prepare_fireworks(settings)
    from ilflows.store.launchpad import EmbeddedLaunchPad, IlflowsLaunchPad

    if settings.backend == "mongodb":
        return IlflowsLaunchPad.from_dict(_with_timeout(_read_config(settings.launchpad_file), settings))
    return EmbeddedLaunchPad(_queue_path(settings), writable=False)


def _with_timeout(config: dict, settings: IlflowsSettings) -> dict:
    """Give a MongoDB client config the mongo_timeout setting, unless it sets its own."""
    kwargs = config.setdefault("mongoclient_kwargs", {}) or {}
    kwargs.setdefault("serverSelectionTimeoutMS", int(settings.mongo_timeout * 1000))
    config["mongoclient_kwargs"] = kwargs
    return config


def _queue_path(settings: IlflowsSettings) -> Path:
    path = queue_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("{}")
        os.replace(tmp, path)
    return path


def check_connection(lp) -> None:
    """Raise :class:`StoreConfigError` (one line) if the LaunchPad's MongoDB is out of reach or refuses us.

    Run before anything is queued.  The message names host, port, user and database, never
    the password (pymongo's own message is left out for that reason).
    """
    from pymongo.errors import PyMongoError

    try:
        lp.db.command("ping")  # reaches the server
        lp.db.list_collection_names()  # needs a login that may read the database
    except PyMongoError as err:
        raise StoreConfigError(mongo_failure(err, lp.host, lp.port, lp.username, lp.name)) from None


def disk_full(err: BaseException, home: Path | None = None) -> bool:
    """Whether ``err`` says that a disk or a quota is full (a file write, or sqlite's under ``home``).

    ``home``: the store's folder (default: the ``home`` setting).
    """
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(err, sqlite3.OperationalError):
        return False
    # sqlite that cannot write its journal on a full disk says "disk I/O error" as often
    return "disk is full" in str(err) or (
        "disk I/O error" in str(err) and shutil.disk_usage(home or get_settings().home).free < 2**20
    )


def disk_full_message(err: BaseException, settings: IlflowsSettings | None = None) -> str:
    """One line for a full disk: which folder, that nothing saved was lost, what to do."""
    settings = settings or get_settings()
    where = Path(err.filename).parent if getattr(err, "filename", None) else settings.home
    why = "quota exceeded" if getattr(err, "errno", None) == errno.EDQUOT else "no space left"
    return (
        f"{why} on the disk of {where}: the queue file and the results store keep their last saved "
        "state (saves are atomic); free space, then run the same command again to go on"
    )


def mongo_failure(err, host, port, username, database, settings: IlflowsSettings | None = None) -> str:
    """One line saying why MongoDB failed ``err`` and which settings to check; never the password.

    pymongo's own message is left out: it can quote the connection string.  Without a server
    in view (``host`` None) the LaunchPad file's are named.
    """
    from pymongo.errors import OperationFailure

    settings = settings or get_settings()
    if host is None:
        try:
            config = _read_config(settings.launchpad_file)
        except (StoreConfigError, OSError, ValueError):
            config = {}
        host, port = config.get("host", "?"), config.get("port", "?")
        username, database = config.get("username"), config.get("name")
    if isinstance(err, OperationFailure):
        reason = (err.details or {}).get("codeName") or err.code
        return (
            f"MongoDB at {host}:{port} refused user {username!r} on database {database!r} "
            f"({reason}); check ILFLOWS_MONGO_USER, ILFLOWS_MONGO_PASSWORD and authsource "
            f"in {settings.launchpad_file}"
        )
    return (
        f"cannot reach MongoDB at {host}:{port} ({type(err).__name__}, after {settings.mongo_timeout:g} s); "
        "check ILFLOWS_MONGO_HOST and ILFLOWS_MONGO_PORT, the network and the TLS options"
    )


def initialize_queue(lp) -> None:
    """Create FireWorks' id counters in an empty LaunchPad database (never touches a used one).

    Also indexes the job uuids, which the LaunchPad looks up for every job that adds jobs
    (``IlflowsLaunchPad._queued``); FireWorks indexes only its own fields.
    """
    if lp.fw_id_assigner.count_documents({}) == 0:
        lp.reset("", require_password=False)
    lp.fireworks.create_index("spec._tasks.job.uuid")


@contextmanager
def open_queue(settings: IlflowsSettings | None = None) -> Iterator:
    """Hold the queue and yield its LaunchPad for writing.

    On the embedded queue: exclusively, or :class:`StoreBusyError` at once; every change is on
    disk when the call that made it returns.  On MongoDB: no lock (the server serialises).
    """
    settings = settings or get_settings()
    if settings.backend != "embedded":
        yield get_launchpad(settings)
        return
    from ilflows.store.launchpad import EmbeddedLaunchPad

    lock_path = queue_file(settings).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise StoreBusyError(
                f"the embedded queue {queue_file(settings)} is held by {holder}; wait for it to finish, "
                "or run more workers in it (ilflows run/worker --workers N; ILFLOWS_BACKEND=mongodb for "
                "workers on several nodes)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} ({' '.join(sys.argv[:2])})")
        fh.flush()
        try:
            prepare_fireworks(settings)
            yield EmbeddedLaunchPad(_queue_path(settings), writable=True)
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def queue_holder(settings: IlflowsSettings | None = None) -> str | None:
    """Who holds the embedded queue now ("pid N (ilflows run)"), or None when nobody does."""
    settings = settings or get_settings()
    lock_path = queue_file(settings).with_suffix(".lock")
    if not lock_path.exists():
        return None
    with open(lock_path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def embedded_limit_notes(jobs: int, labels: int, settings: IlflowsSettings) -> list[str]:
    """Return notes for ``ilflows status`` when the embedded store nears the sizes where it slows down.

    Parameters
    ----------
    jobs
        Jobs in the queue, any state.
    labels
        DFT labels stored or queued.
    settings
        Its ``embedded_job_limit`` and ``embedded_label_limit`` (README: Where the embedded store ends).
    """
    if settings.backend != "embedded":
        return []
    notes = []
    if jobs >= NEAR_LIMIT * settings.embedded_job_limit:
        notes.append(
            f"the embedded queue holds {jobs} jobs (limit {settings.embedded_job_limit}): each job state "
            "change rewrites the whole queue, seconds per job past the limit; `ilflows archive CAMPAIGN` "
            "the finished campaigns or move to MongoDB"
        )
    if labels >= NEAR_LIMIT * settings.embedded_label_limit:
        notes.append(
            f"the embedded results store holds or awaits {labels} DFT labels (limit "
            f"{settings.embedded_label_limit}): every write and query scans all of them, seconds each "
            "past the limit; move to MongoDB (ILFLOWS_BACKEND=mongodb)"
        )
    return notes


def require_store(settings: IlflowsSettings | None = None) -> None:
    """Refuse, in one line, to read an embedded store that is not there (and create nothing).

    Raises
    ------
    StoreConfigError
        Neither the queue file nor the results store exists in the home folder.
    """
    settings = settings or get_settings()
    if settings.backend != "embedded":
        return
    if not (settings.home / "jobstore").is_dir() and not queue_file(settings).exists():
        raise StoreConfigError(
            f"no ilflows store in {settings.home.resolve()}; run a campaign there first, or point "
            "ILFLOWS_HOME (or home: in ~/.ilflows.yaml) at the folder that holds launchpad.json and jobstore/"
        )


def get_jobstore(settings: IlflowsSettings | None = None):
    """Return the configured :class:`jobflow.JobStore` with a ``data`` store for big objects."""
    settings = settings or get_settings()
    from jobflow import JobStore

    if settings.backend == "mongodb":
        config = _read_config(settings.jobstore_file)
        spec = config.get("JOB_STORE", config)
        for part in (spec.get("docs_store"), *(spec.get("additional_stores") or {}).values()):
            if isinstance(part, dict):
                _with_timeout(part, settings)
        return JobStore.from_dict_spec(spec)
    from ilflows.store.monty import LockedMontyStore

    path = str((settings.home / "jobstore").resolve())
    Path(path).mkdir(parents=True, exist_ok=True)
    docs = LockedMontyStore("outputs", database_path=path, database_name="ilflows", storage="sqlite")
    data = LockedMontyStore("outputs_data", database_path=path, database_name="ilflows", storage="sqlite")
    return JobStore(docs, additional_stores={"data": data})


def connect_jobstore(settings: IlflowsSettings | None = None):
    """Return a connected JobStore: ilflows' query indexes on MongoDB, every table made on sqlite.

    montydb creates a collection's sqlite table on its first write, so two workers writing
    their first blobs at once raced ("no such table: documents", and a job document whose blob
    was lost); the tables are made here, before any worker starts.
    """
    settings = settings or get_settings()
    store = get_jobstore(settings)
    store.connect()
    if settings.backend == "mongodb":  # montydb has no indexes; it scans
        for key in JOBSTORE_INDEXES:
            store.docs_store.ensure_index(key)
    else:
        try:
            for part in (store.docs_store, *store.additional_stores.values()):
                database = part._collection.database  # maggma exposes no public handle to it
                if part.collection_name not in database.list_collection_names():
                    database.create_collection(part.collection_name)
            store.docs_store.count()  # reads the documents table: a damaged file fails here
        except sqlite3.DatabaseError as err:
            if disk_full(err, settings.home):
                raise  # not damaged: each command says so in one line
            raise StoreConfigError(
                f"the results store {settings.home.resolve() / 'jobstore'} is damaged ({err}); put back its "
                "folder from a backup (finished labels, trainings and MD are in it), then run again"
            ) from None
    _refuse_lost_results(store, settings)
    return store


def _refuse_lost_results(store, settings: IlflowsSettings) -> None:
    """Raise :class:`StoreConfigError` when the queue has finished jobs but the results store has none.

    The results store was deleted or replaced: reading or running on would recompute (or lose
    track of) every finished DFT label, training and MD run.
    """
    if store.docs_store.count() > 0:
        return
    finished = get_launchpad(settings).fireworks.count_documents({"state": "COMPLETED"})
    if finished:
        embedded = settings.backend == "embedded"
        where = settings.home.resolve() / "jobstore" if embedded else settings.jobstore_file
        queue = queue_file(settings) if embedded else "the LaunchPad database"
        raise StoreConfigError(
            f"the results store ({where}) holds no results, but the queue has {finished} finished jobs: "
            f"it was deleted or replaced; put it back from a backup, or move the queue ({queue}) aside to "
            "start afresh"
        )
