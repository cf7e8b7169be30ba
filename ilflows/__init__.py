"""ilflows: concurrent-learning force fields for ionic liquids on a FireWorks LaunchPad."""

from ilflows.store.backends import prepare_fireworks

__version__ = "0.1.0"

# FireWorks chooses mongomock (embedded store) or pymongo once, at its first import:
# importing ilflows first makes that choice follow ILFLOWS_BACKEND.
prepare_fireworks()
