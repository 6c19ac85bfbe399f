"""Stage 2 of the data flow: images of a formatted dataset -> descriptors in the HDF5 cache.

``settings`` (what a user asks for and the defaults that fill it in), ``request`` (the cache key and
the request record), ``run`` (``extract()``: the loop), ``distributed`` (torchrun: the group and the
sharing of one entry's batches), ``cache`` (the HDF5 store), ``loader`` (image loader threads and
processes), ``official`` (the card's official pipeline, and how a run differs from it).
"""
