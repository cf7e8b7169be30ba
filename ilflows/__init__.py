"""ilflows: concurrent-learning force fields for ionic liquids on a FireWorks LaunchPad."""

from ilflows.settings import SettingsError
from ilflows.store.backends import prepare_fireworks

__version__ = "0.1.0"

# FireWorks chooses mongomock (embedded store) or pymongo once, at its first import:
# importing ilflows first makes that choice follow ILFLOWS_BACKEND.
try:
    prepare_fireworks()
except SettingsError:
    pass  # raised again where the settings are first used (the CLI prints it in one line)
