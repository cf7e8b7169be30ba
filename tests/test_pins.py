"""The private internals ilflows relies on still have the shape it expects (pyproject's upper bounds).

Each test names the ilflows code that needs it; when a newer release fails one, that code and
its pin move together.
"""

from __future__ import annotations

import inspect

import pytest


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_fireworks_internals_patched_by_the_workers():
    """ilflows.worker_processes patches multi_launcher's names and reads FWData().Running_IDs."""
    from fireworks.core import rocket, rocket_launcher
    from fireworks.features import multi_launcher
    from fireworks.fw_config import FWData

    # patched by name in multi_launcher, which calls them through its module globals
    assert multi_launcher.rapidfire is rocket_launcher.rapidfire
    assert "rapidfire(" in inspect.getsource(multi_launcher.rapidfire_process)
    # its wait-and-resubmit loop (a 1.5 s sleep first) runs on nlaunches 0 only: the runner gives -1
    assert "while nlaunches == 0:" in inspect.getsource(multi_launcher.rapidfire_process)
    assert "start_rockets(" in inspect.getsource(multi_launcher.launch_multiprocess)
    # one pass per look (max_loops=1), a pause only when a running job may add more
    assert {"sleep_time", "timeout", "max_loops", "nlaunches"} <= set(_parameters(rocket_launcher.rapidfire))
    assert "num_loops != max_loops" in inspect.getsource(rocket_launcher.rapidfire)
    # the workers' running marks: worker pid -> launch id, cleared by the worker after its job
    assert hasattr(FWData(), "Running_IDs")
    assert "Running_IDs[os.getpid()] = launch_id" in inspect.getsource(rocket)
    # the stop path notes the launches from there; the runner calls launch_multiprocess so
    expected = ["launchpad", "fworker", "loglvl", "nlaunches", "num_jobs", "sleep_time"]
    assert _parameters(multi_launcher.launch_multiprocess)[:6] == expected


def test_fireworks_launchpad_methods_ilflows_overrides():
    """ilflows.store.launchpad overrides _upsert_fws, checkout_fw and complete_launch."""
    from fireworks import LaunchPad

    assert _parameters(LaunchPad._upsert_fws) == ["self", "fws", "reassign_all"]
    assert _parameters(LaunchPad.checkout_fw)[:4] == ["self", "fworker", "launch_dir", "fw_id"]
    assert _parameters(LaunchPad.complete_launch) == ["self", "launch_id", "action", "state"]
    assert {"expiration_secs", "query"} <= set(_parameters(LaunchPad.detect_lostruns))
    # checkout_fw files the job's copy for restore_backup_data where that method looks for it
    assert "self.backup_fw_data[fw_id]" in inspect.getsource(LaunchPad.restore_backup_data)


def test_mongomock_persistence_store_the_embedded_queue_saves():
    """ilflows.store.launchpad saves _store.to_dict() itself and detaches _store._finalizer."""
    mongomock_persistence = pytest.importorskip("mongomock_persistence")
    from mongomock.store import ServerStore

    assert callable(ServerStore.to_dict)
    assert "self._finalizer = weakref.finalize" in inspect.getsource(mongomock_persistence.store)


def test_maggma_montystore_collection_handle(tmp_path):
    """ilflows.store.backends creates the sqlite tables through MontyStore's _collection.database."""
    from maggma.stores import MontyStore

    store = MontyStore("docs", database_path=str(tmp_path), database_name="db", storage="sqlite")
    store.connect()
    database = store._collection.database
    assert callable(database.list_collection_names) and callable(database.create_collection)


def test_jobflow_jobs_in_fireworks_carry_their_uuid():
    """IlflowsLaunchPad._queued finds a job already queued by spec._tasks[].job.uuid."""
    from jobflow import Flow, job
    from jobflow.managers.fireworks import flow_to_workflow

    @job
    def add(a, b):
        return a + b

    first = add(1, 2)
    workflow = flow_to_workflow(Flow([first]))
    assert [task["job"].uuid for fw in workflow.fws for task in fw.tasks] == [first.uuid]
    assert workflow.fws[0].to_dict()["spec"]["_tasks"][0]["job"]["uuid"] == first.uuid
