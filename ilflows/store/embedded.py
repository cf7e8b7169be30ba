"""The embedded LaunchPad: FireWorks' mongomock mode with bulk inserts of new jobs.

Import this module only after :func:`ilflows.store.backends.prepare_fireworks`: FireWorks
binds mongomock or pymongo when it is first imported.
"""

from __future__ import annotations

from fireworks import LaunchPad


class EmbeddedLaunchPad(LaunchPad):
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
