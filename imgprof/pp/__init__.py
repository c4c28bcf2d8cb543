"""imgprof.pp"""

from .._core.namespace import public_dir

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

__dir__ = public_dir(__all__)  # tab completion shows the public API only
