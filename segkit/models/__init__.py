"""Model families. Importing this package registers every model, backbone and head."""

from segkit.models import hrvit, rtformer, segformer, segnext  # noqa: F401
from segkit.models.base import SegModel  # noqa: F401
