"""Config-center sources: one module per center behind `sources.base.Source`."""
