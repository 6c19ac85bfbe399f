"""Registered models. Importing this package registers each built-in model once."""

from vprbench.models import (  # noqa: F401  (registration side effects)
    baselines,
    boq,
    d2vpr,
    dinov2,
    netvlad,
    resnet_vpr,
    salad,
    selavpr,
    supervlad,
)
from vprbench.models.registry import (  # noqa: F401
    ModelCard,
    VPRModel,
    create_model,
    get_card,
    list_models,
    parse_overrides,
)
