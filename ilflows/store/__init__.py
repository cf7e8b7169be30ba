"""LaunchPad and JobStore factories (embedded or MongoDB) and the queries ilflows runs on them."""

from ilflows.store.backends import (
    StoreBusyError,
    StoreConfigError,
    check_connection,
    connect_jobstore,
    get_jobstore,
    get_launchpad,
    hold_embedded_queue,
    initialize_queue,
    prepare_fireworks,
    save_queue,
)

__all__ = [
    "StoreBusyError",
    "StoreConfigError",
    "check_connection",
    "connect_jobstore",
    "get_jobstore",
    "get_launchpad",
    "hold_embedded_queue",
    "initialize_queue",
    "prepare_fireworks",
    "save_queue",
]
