"""Stage 4 of the data flow, beside evaluation: the cost of a model. ``flops`` (parameters and fvcore
FLOPs), ``timing`` (latency, peak memory, the machine), ``run`` (``profile_model``: one cached profile
record, and reductions against a reference).
"""
