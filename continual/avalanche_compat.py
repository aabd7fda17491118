"""Everything that touches Avalanche lives here, workarounds for its breakages included.

Avalanche (0.6.0) is imported lazily: importing it takes ~7 s on the CPU machines here, more
than the rest of a default run's set-up, and our own loop does not need it.

Known breakages on this stack (FIELD_GUIDE section 5) and what we do about them:
- ``class_incremental_benchmark`` streams break iCaRL and ``confusion_matrix_metrics``
  ('DatasetExperience' object has no attribute 'benchmark'): we build with ``nc_benchmark``.
- ``WandBLogger`` fails with wandb 0.31: we log through ``continual.logging.wandb_logger``.
- ``save_checkpoint`` fails with torch 2.14 (dill): we checkpoint our own learners ourselves.
"""

from __future__ import annotations

import warnings

import torch

from continual.stream.stream import Stream


def to_avalanche(stream: Stream, float_images: bool = True):
    """The stream as an Avalanche class-incremental benchmark with the same experiences.

    Experience ``e`` holds exactly ``stream.experiences[e]`` (stream labels, unchanged) in its
    train and test sets; held-out categories are in neither. Images become float ``[0, 1]``
    (what stock Avalanche models expect) unless ``float_images`` is False. The benchmark gets a
    ``class_attributes`` attribute: ``(C, A)`` binary attribute vectors indexed by label (or None).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qpsolvers warns at import that no QP solver is installed
        from avalanche.benchmarks import nc_benchmark

    n_stream = sum(len(c) for c in stream.experiences)
    train_x, train_y = stream.train_x.cpu(), stream.train_y.cpu()
    test_keep = stream.test_y.cpu() < n_stream
    test_x, test_y = stream.test_x.cpu()[test_keep], stream.test_y.cpu()[test_keep]
    if float_images:
        train_x, test_x = train_x.float() / 255.0, test_x.float() / 255.0
    sizes = [len(c) for c in stream.experiences]
    benchmark = nc_benchmark(
        torch.utils.data.TensorDataset(train_x, train_y),
        torch.utils.data.TensorDataset(test_x, test_y),
        n_experiences=len(sizes),
        task_labels=False,
        shuffle=False,
        fixed_class_order=list(range(n_stream)),
        per_exp_classes={e: n for e, n in enumerate(sizes)},
    )
    benchmark.class_attributes = stream.class_attributes().cpu() if stream.has_attributes else None
    return benchmark
