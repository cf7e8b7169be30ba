"""ilflows' LaunchPads: FireWorks' own, never queueing a job twice, and the embedded one.

Import this module only after :func:`ilflows.store.backends.prepare_fireworks`: FireWorks
binds mongomock or pymongo when it is first imported.
"""

from __future__ import annotations

from fireworks import LaunchPad


class IlflowsLaunchPad(LaunchPad):
    """A LaunchPad that does not queue a jobflow job whose uuid is already queued.

    Jobs that a job adds dynamically (labels of selected frames, the next iteration) have uuids
    made from the campaign and their names (:func:`ilflows.loop.campaign.place`), so a job run
    again after its worker died (lost-run detection, rerun) adds nothing that its first run
    already queued: a frame is labelled once.
    """

    @classmethod
    def from_dict(cls, d):
        """Build from a LaunchPad file's mapping (FireWorks' own ``from_dict`` makes a plain LaunchPad)."""
        keys = ("port", "name", "username", "password", "logdir", "strm_lvl", "user_indices")
        keys += ("wf_user_indices", "authsource", "uri_mode", "mongoclient_kwargs")
        return cls(d["host"], **{key: d[key] for key in keys if key in d})

    def complete_launch(self, launch_id, action=None, state="COMPLETED"):
        """Complete the launch, first dropping additions and detours already in the queue."""
        if action is not None:
            action.additions = [wf for wf in action.additions if not self._queued(wf)]
            action.detours = [wf for wf in action.detours if not self._queued(wf)]
        return super().complete_launch(launch_id, action, state)

    def _queued(self, wf) -> bool:
        uuids = [task["job"].uuid for fw in wf.fws for task in fw.tasks if "job" in task]
        return bool(uuids) and self.fireworks.count_documents({"spec._tasks.job.uuid": {"$in": uuids}}) > 0


class EmbeddedLaunchPad(IlflowsLaunchPad):
    """LaunchPad on a mongomock file that appends many jobs in one insert.

    mongomock has no indexes, and FireWorks appends dynamic jobs with one upsert per Firework,
    each scanning the whole collection twice: 1,000 jobs cost seconds and grow with the queue.
    New Fireworks (negative ids) get their ids in one call and go in with one ``insert_many``,
    as FireWorks itself does when it reassigns every id; existing ones are upserted as before.
    """

    def _upsert_fws(self, fws, reassign_all=False):
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

    def ping_launch(self, launch_id, ptime=None, checkpoint=None) -> None:
        """Do nothing: a rocket's ping thread would race the worker on the mongomock store.

        FireWorks pings once more from a second thread as a job finishes, while the worker
        thread replaces that launch's document; mongomock is not thread-safe, and the ping failed
        with "No Launch exists" (or could write a stale history).  The embedded queue needs no
        pings: it is saved only between jobs, so a killed worker's job is still READY on disk.
        """
