"""Hot-swap targets: one module per mechanism behind `targets.base.Target`."""
