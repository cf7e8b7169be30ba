"""The embedded results store: maggma MontyStores (montydb on sqlite) that connect under a lock."""

from __future__ import annotations

import fcntl
from pathlib import Path

from maggma.stores import MontyStore  # the JobStore's store interface, on montydb's serverless files


class LockedMontyStore(MontyStore):
    """A :class:`~maggma.stores.MontyStore` that connects under an exclusive lock on its folder.

    Each connect rewrites montydb's two configuration files in the folder (maggma calls montydb's
    ``set_storage``, which truncates and writes them), then montydb reads them back to open the
    database: a worker connecting while another rewrote them read them empty and its job failed
    ("Empty module name", "montydb has been config to use BSON").  Without the lock, four processes
    connecting 40 times each failed 73 of 160 connects here.
    """

    def connect(self, force_reset: bool = False) -> None:
        """Connect as :meth:`MontyStore.connect` does, one process at a time."""
        with open(Path(self.database_path) / "connect.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            super().connect(force_reset=force_reset)
