"""Model families. Importing this package registers every model entrypoint (see ``ifer.models.registry``)."""
from ifer.models import (  # noqa: F401  (imported for their @register_model side effects)
    asit,
    asit_codes,
    baselines,
    disentangled,
    gcvit,
    ifer,
    inversion_disc,
    ke2nt,
    psp,
    stylegan2,
)

