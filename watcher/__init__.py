"""model-watcher: keeps a running model server in line with its published configuration."""

__version__ = "0.1.0"
