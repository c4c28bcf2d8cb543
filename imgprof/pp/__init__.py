"""imgprof.pp"""

__all__: list[str] = []

from .aggregate import aggregate

__all__ += ["aggregate"]

from .consensus import consensus, modz_weights  # noqa: E402

__all__ += ["consensus", "modz_weights"]

from .annotate import annotate, load_platemap  # noqa: E402
from .qc import qc  # noqa: E402

__all__ += ["annotate", "load_platemap", "qc"]

from .feature_select import feature_select  # noqa: E402
from .normalize import normalize  # noqa: E402

__all__ += ["feature_select", "normalize"]

from .._core.guardrails import FeatureDominanceWarning  # noqa: E402

__all__ += ["FeatureDominanceWarning"]

def __dir__() -> list[str]:
    """Public API only, so tab completion shows no submodule or import leftovers."""
    return sorted(__all__)
