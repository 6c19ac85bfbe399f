"""Stage 3 of the data flow: cached descriptors -> neighbours -> recall@k with intervals -> a run record.

``run`` (``evaluate()``: one model on one protocol, its run record), ``search`` (faiss and torch exact
search, approximate indexes), ``metrics`` (recall@k, intervals and paired tests: pure numpy, no I/O),
``clusters`` (how a protocol's queries are resampled), ``pca`` (whitening fitted on another set),
``compare`` (two runs on the same queries), ``audit`` (how much recall moves with each setting papers differ in).
"""
