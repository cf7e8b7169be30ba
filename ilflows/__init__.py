"""ilflows: concurrent-learning force fields for ionic liquids on a FireWorks LaunchPad."""

__version__ = "0.1.0"
