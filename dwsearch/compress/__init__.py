"""Compression beside block choice: knowledge distillation, structured pruning back to a
spec, and quantization-aware training.

* :mod:`~dwsearch.compress.distill`: the distillation loss and the teacher, whose logits are
  kept beside the data when they do not change (``dwsearch.run.train_spec(distill=...)``).
* :mod:`~dwsearch.compress.prune`: a trained model's channels pruned with Torch-Pruning to a
  MAC or parameter target, written back as a dwsearch spec, then fine-tuned.
* :mod:`~dwsearch.compress.qat`: post-training INT8 as :mod:`dwsearch.deploy` makes it and,
  when it loses too much accuracy, quantization-aware training with the same quantizer.

Torch inside; no Optuna, no pandas. Torch-Pruning is imported only when a model is pruned, so
this package imports without it (``pip install 'dwsearch[compress]'`` adds it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dwsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from dwsearch.compress.config import (
        DistillConfig,
        PruneConfig,
        PruneTarget,
        QatConfig,
    )
    from dwsearch.compress.distill import (
        Distillation,
        DistillCost,
        Teacher,
        distillation_cost,
        distillation_loss,
        load_teacher,
        weights_checksum,
    )
    from dwsearch.compress.prune import (
        Pruned,
        PruneOutcome,
        prune_and_finetune,
        prune_model,
        pruned_spec,
    )
    from dwsearch.compress.qat import QatResult, quantization_aware

_EXPORTS = {
    "dwsearch.compress.config": ("DistillConfig", "PruneConfig", "PruneTarget", "QatConfig"),
    "dwsearch.compress.distill": ("DistillCost", "Distillation", "Teacher",
                                  "distillation_cost", "distillation_loss", "load_teacher",
                                  "weights_checksum"),
    "dwsearch.compress.prune": ("PruneOutcome", "Pruned", "prune_and_finetune", "prune_model",
                                "pruned_spec"),
    "dwsearch.compress.qat": ("QatResult", "quantization_aware"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
