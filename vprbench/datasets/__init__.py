"""Ground-truth readers, formatted datasets on disk, and the torch image dataset."""
