"""What the locations agree on: keys, formats, storage, IO manager, resources, experiments, versions. No torch."""
