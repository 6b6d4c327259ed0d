"""The runner: config building, launching, sweeps, collection, reporting, progress and provenance."""
