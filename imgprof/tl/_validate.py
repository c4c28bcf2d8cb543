"""Former home of the integration checks; kept so older imports keep working.

The checks live in the shared core now: :func:`imgprof._core.inputs.check_batches`,
and the integration coordinators :func:`imgprof.tl.integrate.prepare`,
:func:`~imgprof.tl.integrate.get_rep` and :func:`~imgprof.tl.integrate.store_correction`
(which writes through :func:`imgprof._core.store.store`).
"""

from __future__ import annotations

from .._core.inputs import check_batches
from .integrate import get_rep, prepare
from .integrate import store_correction as store

__all__ = ["check_batches", "get_rep", "prepare", "store"]
