"""ilflows' LaunchPads: FireWorks' own, never queueing a job twice, and the embedded one.

Import this module only after :func:`ilflows.store.backends.prepare_fireworks`: FireWorks
binds mongomock or pymongo when it is first imported.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import bson.json_util
from fireworks import FWAction, LaunchPad

WORKER_DIED = "WorkerDied"  # the error of a launch whose worker died under it
# ENOSPC, EDQUOT and sqlite's two ways of saying so (its journal on a full disk: "disk I/O error"),
# in a fizzled job's traceback
DISK_FULL = r"\[Errno (28|122)\]|database or disk is full|disk I/O error"
INTERRUPTED = "Interrupted: its worker was stopped by a signal; the job runs again"


@dataclass
class Progress:
    """A job that finished, and where its campaign stands."""

    job: str
    state: str  # COMPLETED or FIZZLED
    seconds: float  # run time of the job, s
    done: int  # completed jobs of its workflow
    total: int  # jobs of its workflow


class IlflowsLaunchPad(LaunchPad):
    """A LaunchPad that does not queue a jobflow job whose uuid is already queued.

    Jobs that a job adds dynamically (labels of selected frames, the next iteration) have uuids
    made from the campaign and their names (:func:`ilflows.loop.jobs.place`), so a job run
    again after its worker died (lost-run detection, rerun) adds nothing that its first run
    already queued: a frame is labelled once.

    ``on_progress``, when set, is called with a :class:`Progress` after each job completes or
    fizzles, in the process that holds the LaunchPad (FireWorks' DataServer when several
    workers share it).  With ``remove_completed_runs`` a job's run folder is deleted as soon as
    the job completes (its worker does nothing more there), so that a long-lived worker does not
    fill its disk with CP2K restart files; failed jobs keep theirs.
    """

    on_progress: Callable[[Progress], None] | None = None
    remove_completed_runs: bool = False

    def __init__(self, *args, **kwargs):
        self._in_flight: dict[int, float] = {}
        super().__init__(*args, **kwargs)

    @classmethod
    def from_dict(cls, d):
        """Build from a LaunchPad file's mapping (FireWorks' own ``from_dict`` makes a plain LaunchPad)."""
        keys = ("port", "name", "username", "password", "logdir", "strm_lvl", "user_indices")
        keys += ("wf_user_indices", "authsource", "uri_mode", "mongoclient_kwargs")
        return cls(d["host"], **{key: d[key] for key in keys if key in d})

    def checkout_fw(self, *args, **kwargs):
        """Check out a ready job; it is in flight until :meth:`complete_launch` has queued its additions.

        FireWorks keeps the job's state at checkout for ``restore_backup_data`` (what a worker
        calls when a completion fails, e.g. on a full disk) under the fw id it was *asked* for,
        None for "any ready job": the restore then put back the launch but left the job as the
        failed completion had set it, FIZZLED beside a RUNNING launch, which no later run
        recovers.  The copy is kept under the job's own id.
        """
        fw, launch_id = super().checkout_fw(*args, **kwargs)
        if launch_id is not None:
            self._in_flight[launch_id] = time.monotonic()
            self.backup_fw_data.pop(None, None)
            self.backup_fw_data[fw.fw_id] = fw.to_db_dict()
        return fw, launch_id

    def complete_launch(self, launch_id, action=None, state="COMPLETED"):
        """Complete the launch, first dropping additions and detours already in the queue."""
        self._in_flight[launch_id] = time.monotonic()  # completing: its additions are not queued yet
        try:
            if action is not None:
                action.additions = [wf for wf in action.additions if not self._queued(wf)]
                action.detours = [wf for wf in action.detours if not self._queued(wf)]
            launch = super().complete_launch(launch_id, action, state)
        finally:
            self._in_flight.pop(launch_id, None)
        if state == "COMPLETED" and self.remove_completed_runs and launch.get("launch_dir"):
            folder = Path(launch["launch_dir"])
            if folder.name.startswith("launcher_"):  # FireWorks' run folder, never anything above it
                shutil.rmtree(folder, ignore_errors=True)
        if self.on_progress is not None:
            self._commit()  # a job reported done is done on disk
            self.on_progress(self._progress(launch_id))
        return launch

    def launches_in_flight(self) -> dict[int, float]:
        """Jobs checked out here and not completed yet.

        Returns launch id -> seconds since the job's checkout or since its completion began.
        """
        now = time.monotonic()
        return {launch_id: now - since for launch_id, since in self._in_flight.items()}

    def _upsert_fws(self, fws, reassign_all=False):
        """Insert new Fireworks with one ``insert_many``.

        FireWorks upserts appended jobs one by one: a round trip each on MongoDB (5,415 calls to
        queue 1,000 labels), two scans of the collection each on mongomock.
        """
        fresh = sorted((fw for fw in fws if fw.fw_id < 0), key=lambda fw: fw.fw_id)
        if reassign_all or not fresh:
            return super()._upsert_fws(fws, reassign_all)
        old_new = super()._upsert_fws([fw for fw in fws if fw.fw_id >= 0])
        first = self.get_new_fw_id(quantity=len(fresh))
        for new_id, fw in enumerate(fresh, start=first):
            old_new[fw.fw_id] = new_id
            fw.fw_id = new_id
        self.fireworks.insert_many([fw.to_db_dict() for fw in fresh])
        return old_new

    def put_back_interrupted(self, running: list[int], since: datetime) -> list[str]:
        """Put back, READY, the jobs that a stop signal interrupted; return their names.

        ``running`` are the fw ids the stopped workers were running; jobs that fizzled at or
        after ``since`` (naive UTC, FireWorks' clock) fizzled because the signal also reached
        their engine.  An interruption is not a failure: nothing is counted against the job.
        """
        query = {"state": "FIZZLED", "fw_id": {"$nin": running}}
        fizzled = [
            fw["fw_id"]
            for fw in self.fireworks.find(query, {"fw_id": 1, "launches": 1})
            if fw["launches"]
            and self.launches.count_documents({"launch_id": fw["launches"][-1], "time_end": {"$gte": since}})
        ]
        names = []
        for fw_id in [*running, *fizzled]:
            fw = self.fireworks.find_one({"fw_id": fw_id}, {"name": 1, "launches": 1, "state": 1})
            if fw is None or fw["state"] not in ("RUNNING", "FIZZLED"):
                continue
            if fw["state"] == "RUNNING":  # its launch ends as FireWorks ends a lost one, then it runs again
                action = FWAction(stored_data={"_exception": {"_stacktrace": INTERRUPTED}})
                LaunchPad.complete_launch(self, fw["launches"][-1], action, state="FIZZLED")
            self.rerun_fw(fw_id)
            names.append(fw["name"])
        return sorted(names)

    def put_back_disk_failures(self) -> list[str]:
        """Put back, READY, the jobs that fizzled because a disk or quota was full; return their names.

        FireWorks fizzles a job whose completion it could not record; a full disk is no failure
        of the job, which runs again once there is space.
        """
        failed = {"state": "FIZZLED", "action.stored_data._exception._stacktrace": {"$regex": DISK_FULL}}
        launch_ids = {launch["launch_id"] for launch in self.launches.find(failed, {"launch_id": 1})}
        names = []
        for fw in self.fireworks.find({"state": "FIZZLED"}, {"fw_id": 1, "name": 1, "launches": 1}):
            if fw["launches"] and fw["launches"][-1] in launch_ids:
                self.rerun_fw(fw["fw_id"])
                names.append(fw["name"])
        return sorted(names)

    def _commit(self) -> None:
        """Make the changes so far durable (MongoDB already has them)."""

    def _queued(self, wf) -> bool:
        uuids = [task["job"].uuid for fw in wf.fws for task in fw.tasks if "job" in task]
        return bool(uuids) and self.fireworks.count_documents({"spec._tasks.job.uuid": {"$in": uuids}}) > 0

    def _progress(self, launch_id: int) -> Progress:
        launch = self.launches.find_one({"launch_id": launch_id}, {"fw_id": 1, "state": 1, "runtime_secs": 1})
        fw = self.fireworks.find_one({"fw_id": launch["fw_id"]}, {"name": 1})
        nodes = self.workflows.find_one({"nodes": launch["fw_id"]}, {"nodes": 1})["nodes"]
        done = self.fireworks.count_documents({"fw_id": {"$in": nodes}, "state": "COMPLETED"})
        return Progress(fw["name"], launch["state"], launch.get("runtime_secs") or 0.0, done, len(nodes))


# LaunchPad methods that only read; every other public method may write.
READERS = frozenset(
    {
        "as_dict",
        "future_run_exists",
        "get_fw_by_id",
        "get_fw_dict_by_id",
        "get_fw_ids",
        "get_fw_ids_from_reservation_id",
        "get_fw_ids_in_wfs",
        "get_launch_by_id",
        "get_launchdir",
        "get_logdir",
        "get_reservation_id_from_fw_id",
        "get_tracker_data",
        "get_wf_by_fw_id",
        "get_wf_by_fw_id_lzyfw",
        "get_wf_ids",
        "get_wf_summary_dict",
        "log_message",
        "ping_launch",  # a no-op on the embedded queue
        "reload",
        "run_exists",
        "to_db_dict",
        "to_dict",
        "to_file",
        "to_format",
    }
)


def _extended_json(value):
    """MongoDB extended JSON of a value plain JSON cannot write, as ``bson.json_util.dumps`` gives."""
    return bson.json_util.default(value, json_options=bson.json_util.DEFAULT_JSON_OPTIONS)


class ReadOnlyQueueError(RuntimeError):
    """A write was attempted through a LaunchPad opened for reading."""


class EmbeddedLaunchPad(IlflowsLaunchPad):
    """LaunchPad on FireWorks' mongomock file, safe for several workers of one process tree.

    mongomock is neither thread-safe (``find_one_and_update`` is not atomic) nor persistent by
    itself (mongomock_persistence writes the whole file when the client is collected, from
    whichever process collects it last).  So every public method runs under one lock, and a
    *writable* pad saves the whole store atomically (temporary file, then ``os.replace``) after
    each outermost call that may have written: the file on disk is the queue after its last
    state change, whatever is killed.  Only the process holding the queue's file lock opens it
    writable (:func:`ilflows.store.open_queue`); FireWorks' ``launch_multiprocess`` serves that
    one object to its workers.  A read-only pad reloads the file when it has changed and
    refuses writes.
    """

    def __init__(self, path: Path, writable: bool):
        self._lock = threading.RLock()  # before LaunchPad.__init__, which may call public methods
        self._in_flight = {}
        self._put_back: set[int] = set()  # fw ids whose worker died under them (recover_lost_runs)
        self._depth = 0
        self._wrote = False
        self._path = path
        self._writable = writable
        self._connect()

    def _connect(self) -> None:
        from ilflows.store.backends import StoreConfigError

        self._mtime = self._path.stat().st_mtime_ns
        try:
            LaunchPad.__init__(self, host="localhost", name="ilflows", strm_lvl="WARNING")
        except ValueError as err:  # JSON and Unicode decoding errors: a truncated or foreign file
            backup, why = self._backup(), f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"
            keep = (
                f"the queue before its last change is {backup}, copy it over it; " if backup.exists() else ""
            )
            raise StoreConfigError(
                f"{self._path} is not a readable queue ({why}); {keep}or move it away and run the spec "
                "again (results already stored are not computed again)"
            ) from None
        # mongomock_persistence would write the whole file, non-atomically, when the client is
        # garbage collected, from every process that read it; only _save() writes.
        self.connection._store._finalizer.detach()

    def _commit(self) -> None:
        if self._writable:
            self._save()
            self._wrote = False

    def _save(self) -> None:
        """Write the whole store to its file atomically.

        The text is what ``bson.json_util.dumps`` writes, but the C encoder walks the
        documents and ``json_util.default`` sees only what JSON lacks (ObjectId, dates): 2.5-4.5
        times faster, and a save follows every change, of a file that grows with the campaign.
        """
        text = json.dumps(self.connection._store.to_dict(), default=_extended_json)
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:  # a full disk: the file stays as last saved, and the part written goes
            tmp.unlink(missing_ok=True)
            raise
        if self._path.exists():  # the state before this change stays beside it
            link = self._backup().with_suffix(".tmp")
            link.unlink(missing_ok=True)
            os.link(self._path, link)
            os.replace(link, self._backup())
        os.replace(tmp, self._path)
        self._mtime = self._path.stat().st_mtime_ns

    def _backup(self) -> Path:
        return self._path.with_name(f"{self._path.name}.previous")

    def recover_lost_runs(self, query: dict | None = None) -> list[str]:
        """Put back the RUNNING jobs (matching ``query``): with the queue held, none has a live worker.

        A worker killed mid-job leaves its job RUNNING on disk (it was saved at checkout).  A job
        already put back by this pad fizzles instead, with an error saying its worker died again.
        Returns the names of the jobs put back.
        """
        _, lost, _ = self.detect_lostruns(expiration_secs=0, query=query)
        back = []
        for fw_id in lost:
            fw = self.fireworks.find_one({"fw_id": fw_id}, {"name": 1, "launches": 1})
            again = fw_id in self._put_back
            died = "died again" if again else "died"
            error = f"{WORKER_DIED}: its worker {died} while running it (killed, e.g. out of memory)"
            action = FWAction(stored_data={"_exception": {"_stacktrace": error}})
            if again:  # a failure like any other: reported, its children wait
                self.complete_launch(fw["launches"][-1], action, state="FIZZLED")
            else:  # the launch ends as FireWorks ends a lost one, quietly: the job runs again
                LaunchPad.complete_launch(self, fw["launches"][-1], action, state="FIZZLED")
                self.rerun_fw(fw_id)
                self._put_back.add(fw_id)
                back.append(fw["name"])
        return sorted(back)

    def reload(self) -> None:
        """Read the queue from its file again: FireWorks' worker server, another process, saved it."""
        with self._lock:
            self._connect()

    def ping_launch(self, launch_id, ptime=None, checkpoint=None) -> None:
        """Do nothing: the embedded queue has no lost-run timer (see :meth:`recover_lost_runs`)."""


def _serialised(method, writes: bool):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            if self._depth == 0 and not self._writable:
                if writes:
                    raise ReadOnlyQueueError(
                        f"{method.__name__}: {self._path} is open for reading only; "
                        "write through ilflows.store.open_queue()"
                    )
                if self._path.stat().st_mtime_ns != self._mtime:
                    self._connect()  # another process saved the queue since we read it
            self._depth += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._depth -= 1
                self._wrote |= writes
                if self._depth == 0 and self._wrote:
                    self._wrote = False
                    if self._writable:
                        self._save()

    return call


for _name, _method in inspect.getmembers(EmbeddedLaunchPad, inspect.isfunction):
    if not _name.startswith("_") and not isinstance(
        inspect.getattr_static(EmbeddedLaunchPad, _name), staticmethod
    ):
        setattr(EmbeddedLaunchPad, _name, _serialised(_method, writes=_name not in READERS))
