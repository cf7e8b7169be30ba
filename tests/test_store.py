"""Store factories: MongoDB configuration objects (no server) and the embedded queue's guards."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MONGO_ENV = {
    "ILFLOWS_BACKEND": "mongodb",
    "ILFLOWS_LAUNCHPAD_FILE": str(ROOT / "launchpad_configs/my_launchpad.yaml"),
    "ILFLOWS_JOBSTORE_FILE": str(ROOT / "launchpad_configs/jobflow.yaml"),
    "ILFLOWS_MONGO_HOST": "mongo.cluster.example",
    "ILFLOWS_MONGO_PORT": "27018",
    "ILFLOWS_MONGO_DB": "il_campaigns",
    "ILFLOWS_MONGO_USER": "alice",
    "ILFLOWS_MONGO_PASSWORD": "s3cret",
}

PROBE = """
import json
from ilflows.store import get_jobstore, get_launchpad
lp = get_launchpad()
js = get_jobstore()
d, g = js.docs_store, js.additional_stores["data"]
print(json.dumps({
    "lp": [type(lp.connection).__module__, lp.host, lp.port, lp.name, lp.username, lp.password,
           lp.mongoclient_kwargs.get("tls")],
    "docs": [type(d).__name__, d.host, d.port, d.database, d.username, d.password, d.collection_name],
    "data": [type(g).__name__, g.host, g.database, g.username, g.collection_name],
}))
"""


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ILFLOWS_", "MONGOMOCK"))}
    return subprocess.run([sys.executable, "-c", code], env={**full, **env}, capture_output=True, text=True)


def test_mongodb_config_builds_launchpad_and_stores_without_connecting():
    proc = _python(PROBE, MONGO_ENV)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["lp"] == [
        "pymongo.synchronous.mongo_client",
        "mongo.cluster.example",
        27018,
        "il_campaigns",
        "alice",
        "s3cret",
        True,
    ]
    assert got["docs"] == [
        "MongoStore",
        "mongo.cluster.example",
        27018,
        "il_campaigns",
        "alice",
        "s3cret",
        "outputs",
    ]
    assert got["data"] == [
        "GridFSStore",
        "mongo.cluster.example",
        "il_campaigns",
        "alice",
        "outputs_blobs",
    ]


def test_mongodb_config_names_the_missing_variable():
    env = {k: v for k, v in MONGO_ENV.items() if k != "ILFLOWS_MONGO_PASSWORD"}
    proc = _python("from ilflows.cli import main; raise SystemExit(main(['status']))", env)
    assert proc.returncode == 2
    assert "ILFLOWS_MONGO_PASSWORD is not set" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_embedded_queue_survives_a_new_process_and_refuses_a_second_holder(tmp_path):
    env = {"ILFLOWS_HOME": str(tmp_path)}
    write = (
        "from ilflows.store import get_launchpad, hold_embedded_queue, initialize_queue, save_queue\n"
        "from fireworks import Firework, ScriptTask\n"
        "with hold_embedded_queue():\n"
        "    lp = get_launchpad(); initialize_queue(lp)\n"
        "    lp.add_wf(Firework(ScriptTask.from_str('true'), name='probe'))\n"
        "    save_queue(lp)\n"
    )
    assert _python(write, env).returncode == 0
    read = "from ilflows.store import get_launchpad; print(get_launchpad().fireworks.count_documents({}))"
    assert _python(read, env).stdout.strip() == "1"
    # a reader never writes the file back (mongomock would at exit)
    before = (tmp_path / "launchpad.json").stat().st_mtime_ns
    _python(read, env)
    assert (tmp_path / "launchpad.json").stat().st_mtime_ns == before

    hold = (
        "from ilflows.store import hold_embedded_queue\nimport time\n"
        "with hold_embedded_queue():\n    print('held', flush=True); time.sleep(30)\n"
    )
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ILFLOWS_", "MONGOMOCK"))}
    holder = subprocess.Popen(
        [sys.executable, "-c", hold], env={**full, **env}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = _python(write, env)
        assert second.returncode != 0
        assert "is held by pid" in second.stderr
        assert "only one worker may run on the embedded store" in second.stderr
    finally:
        holder.kill()
        holder.wait()
    assert _python(write, env).returncode == 0  # released when the holder died
    assert _python(read, env).stdout.strip() == "2"
