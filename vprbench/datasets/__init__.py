"""The protocol registry (datasets.yaml), ground-truth readers and writers, downloads and formatters,
formatted datasets on disk, and the image dataset the loaders read."""
