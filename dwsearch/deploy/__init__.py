"""Deployment: lower a model to a runtime (ExecuTorch with the XNNPACK delegate, ONNX Runtime
on the CPU), in fp32 or int8, run it, check it against eager PyTorch and time it.

The runtimes are imported only when a model is lowered, so this package imports without
them; a missing one is one line naming the extra (``pip install 'dwsearch[deploy]'``). No
Optuna and no pandas here: studies and reports call this package, not the reverse.

``lower`` makes and checks one program; ``measure`` lowers several models to several
runtimes and times them together, interleaved (``time_interleaved``); ``random_images`` and
``split_images`` give the images to calibrate and check with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dwsearch._lazy import lazy_exports

# Module names differ from every exported name: importing a submodule sets it as an
# attribute of the package, which would hide an exported function of the same name.

if TYPE_CHECKING:
    from dwsearch.deploy._runtimes import PRECISIONS, RUNTIMES, Session
    from dwsearch.deploy.deployment import Deployment, measure, thread_counts
    from dwsearch.deploy.images import random_images, split_images
    from dwsearch.deploy.latency import (
        Candidate,
        Conditions,
        LatencyTable,
        Ratio,
        Timing,
        time_interleaved,
    )
    from dwsearch.deploy.program import FP32_TOLERANCE, Correctness, Lowered, eager_session, lower
    from dwsearch.deploy.trained import deploy_trained

_EXPORTS = {
    "dwsearch.deploy._runtimes": ("PRECISIONS", "RUNTIMES", "Session"),
    "dwsearch.deploy.images": ("random_images", "split_images"),
    "dwsearch.deploy.latency": ("Candidate", "Conditions", "LatencyTable", "Ratio", "Timing",
                                "time_interleaved"),
    "dwsearch.deploy.program": ("FP32_TOLERANCE", "Correctness", "Lowered", "eager_session",
                              "lower"),
    "dwsearch.deploy.deployment": ("Deployment", "measure", "thread_counts"),
    "dwsearch.deploy.trained": ("deploy_trained",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
