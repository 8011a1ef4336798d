"""Model families. Importing this package registers every model entrypoint (see ``ifer.registry``)."""
from ifer.models import (  # noqa: F401  (imported for their @register_model side effects)
    asit,
    baselines,
    disentangled,
    gcvit,
    ifer,
    inversion_disc,
    ke2nt,
    stylegan2,
)
from ifer.models.quirks import AS_DESCRIBED, AS_RELEASED, Quirks, get_quirks  # noqa: F401
