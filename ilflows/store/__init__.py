"""LaunchPad and JobStore factories (embedded or MongoDB) and the queries ilflows runs on them."""

from ilflows.store.backends import (
    WORKER_NAME,
    StoreBusyError,
    StoreConfigError,
    check_connection,
    connect_jobstore,
    disk_full,
    disk_full_message,
    embedded_limit_notes,
    get_jobstore,
    get_launchpad,
    initialize_queue,
    mongo_failure,
    open_queue,
    prepare_fireworks,
    queue_holder,
    require_store,
)

__all__ = [
    "WORKER_NAME",
    "StoreBusyError",
    "StoreConfigError",
    "check_connection",
    "mongo_failure",
    "connect_jobstore",
    "disk_full",
    "disk_full_message",
    "require_store",
    "embedded_limit_notes",
    "get_jobstore",
    "get_launchpad",
    "initialize_queue",
    "open_queue",
    "prepare_fireworks",
    "queue_holder",
]
