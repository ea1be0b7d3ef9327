"""Restart runtimes: one module per mechanism behind `runtimes.base.Runtime`."""
