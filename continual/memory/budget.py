"""Memory budgets in bytes: what a learner keeps between steps, and a replay capacity that fits a budget.

Counting memory in images (``memory.size``) compares methods at unequal budgets: DER++ also keeps
each image's logits, LwF and iCaRL a frozen copy of the model, EWC a Fisher and an anchor per weight.
Following Zhou et al. (ICLR 2023, "A model or 603 exemplars"), the budget counts stored examples and
every extra copy of model-sized state; ``memory.budget`` sets it in bytes and each learner gets the
replay capacity (examples) whose largest footprint fits.

What counts, found from the learner's attributes (nothing to declare per learner):

- stores of examples: an attribute that is not a module, has ``len()`` and holds tensors (the replay
  memory, ER-ACE's recent buffer, iCaRL's exemplars, joint's store). Every tensor in it of at least
  ``capacity`` rows is a per-slot array: ``len(store)`` rows are held, ``capacity`` at most. Parts are
  named after the tensor (``images``, ``labels``, ``attribute_codes``, ``logits``, ...), prefixed
  with the store's name unless it is ``memory`` (``recent_images``);
- submodules without trainable weights: frozen copies (``teacher`` -> ``old_model``) and statistics
  (``binding``'s running sums), their persistent tensors; not a frozen pretrained backbone, which is
  the model itself (``counts_as_model``);
- the learner's own persistent buffers (``label_counts``, ``class_means``);
- tensors, and dicts or lists of tensors, kept as plain attributes (EWC's ``fisher`` and ``anchor``).
  Those two are empty until the first experience ends; at most (``PER_WEIGHT_STATE``) they hold one
  tensor per trainable weight.

What does not count, and why:

- the trainable weights and the buffers of the modules that hold them (batch-norm statistics): the
  model itself, which every method has;
- optimiser moments (Adam's two per weight): not counted in the literature's budgets either (Zhou et
  al. count exemplars and extra model copies), and every method here carries the same optimiser;
- non-persistent buffers: given at construction (the categories' attribute descriptions) or
  recomputed each step (binding's mask of open rows);
- host-side counters and random generators (a few integers per class).

The labels' host mirror of the class-balanced reservoir (``labels_host``) is counted: it is held.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterator

import torch
from torch import nn

from continual.config import ConfigError

# How a store's per-slot tensors and a learner's submodules are shown in ``memory_bytes``.
TENSOR_PARTS = {"x": "images", "y": "labels", "codes": "attribute_codes", "y_host": "labels_host",
                "logits": "logits", "n_logits": "logit_widths", "rank": "herding_ranks"}
MODULE_PARTS = {"teacher": "old_model"}
# Attributes holding one tensor per trainable weight once an experience has ended (empty before): EWC's.
PER_WEIGHT_STATE = ("fisher", "anchor")

UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_BYTES = re.compile(r"(\d+(?:\.\d+)?) ?(" + "|".join(UNITS) + r")")
ACCEPTED = ("bytes as an int (1500000) or a string with a unit: '1.5MB', '800KB', '2MiB' "
            f"(units {', '.join(UNITS)}; kB/KB/MB/GB are powers of 10, KiB/MiB/GiB of 2)")


def parse_bytes(value: Any, key: str = "memory.budget") -> int:
    """``1500000``, ``"1.5MB"``, ``"800KB"``, ``"2MiB"`` -> bytes; anything else raises ``ConfigError``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"config key {key} must be >= 0 bytes, got {value}")
        return value
    if isinstance(value, str):
        match = _BYTES.fullmatch(value.strip())
        if match:
            exact = Decimal(match.group(1)) * UNITS[match.group(2)]
            if exact != exact.to_integral_value():
                raise ConfigError(f"config key {key}={value!r} is not a whole number of bytes ({exact})")
            return int(exact)
    raise ConfigError(f"config key {key} must be {ACCEPTED}; got {value!r} ({type(value).__name__})")


def check_memory_config(memory: dict | None) -> None:
    """``memory.size`` (images) or ``memory.budget`` (bytes): exactly one of them, each well-formed."""
    memory = memory or {}
    size, budget = memory.get("size"), memory.get("budget")
    if size is not None and budget is not None:
        raise ConfigError(f"config keys memory.size={size} and memory.budget={budget!r} are both set: the "
                          f"memory is counted in images (memory.size) or in bytes (memory.budget), not both; "
                          f"set memory.size=null to use the budget")
    if size is None and budget is None:
        raise ConfigError("config key memory.size is missing: set memory.size (images) or memory.budget (bytes)")
    if size is not None and size < 0:
        raise ConfigError(f"config key memory.size must be >= 0, got {size}")
    if budget is not None:
        parse_bytes(budget)


# --------------------------------------------------------------------------------------------
# what a learner holds
# --------------------------------------------------------------------------------------------


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in ``value``: a tensor, or a dict / list / tuple of them (nested)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def _is_store(value: Any) -> bool:
    """A store of examples: not a module, has ``len()``, holds tensors as attributes."""
    fields = getattr(value, "__dict__", None)
    return (fields is not None and not isinstance(value, nn.Module) and hasattr(value, "__len__")
            and any(isinstance(v, torch.Tensor) for v in fields.values()))


def _store_parts(name: str, store: Any, at_most: bool) -> dict[str, int]:
    """Bytes of a store's per-slot arrays: ``len(store)`` rows, or ``capacity`` rows with ``at_most``."""
    capacity = getattr(store, "capacity", None)
    rows = capacity if at_most and capacity is not None else len(store)
    prefix = "" if name == "memory" else f"{name}_"
    parts = {}
    for attr, t in vars(store).items():
        if not isinstance(t, torch.Tensor):
            continue
        part = prefix + TENSOR_PARTS.get(attr, attr)
        per_slot = t.dim() >= 1 and t.shape[0] >= (capacity if capacity is not None else len(store))
        row_bytes = t.element_size() * math.prod(t.shape[1:]) if t.dim() >= 1 else 0
        parts[part] = rows * row_bytes if per_slot else t.nbytes  # other tensors: held whole
    return parts


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _parts(learner: nn.Module, at_most: bool) -> dict[str, int]:
    parts: dict[str, int] = {}
    for name, child in learner.named_children():
        # A frozen copy or statistics, not the model; a frozen pretrained backbone (``counts_as_model``) is the model.
        if not _trainable(child) and not getattr(child, "counts_as_model", False):
            parts[MODULE_PARTS.get(name, name)] = sum(t.nbytes for t in _tensors(child.state_dict()))
    for name, buffer in learner.named_buffers(recurse=False):
        if buffer is not None and name not in learner._non_persistent_buffers_set:
            parts[name] = buffer.nbytes
    for name, value in vars(learner).items():
        if name.startswith("_") or isinstance(value, (nn.Module, torch.optim.Optimizer)):
            continue
        if _is_store(value):
            parts.update(_store_parts(name, value, at_most))
        elif name in PER_WEIGHT_STATE:
            held = sum(t.nbytes for t in _tensors(value))
            weights = sum(p.nbytes for p in learner.parameters() if p.requires_grad)
            parts[name] = max(held, weights) if at_most else held
        elif any(True for _ in _tensors(value)):
            parts[name] = sum(t.nbytes for t in _tensors(value))
    return parts


def memory_bytes(learner: nn.Module) -> dict[str, int]:
    """Bytes the learner holds now beyond its trainable weights, by part (the module docstring says which)."""
    return _parts(learner, at_most=False)


def max_memory_bytes(learner: nn.Module) -> dict[str, int]:
    """The most each part can hold: stores full to their capacity, per-weight state filled.

    A store without a capacity (joint's) has no maximum: it counts what it holds now.
    """
    return _parts(learner, at_most=True)


def unbounded_stores(learner: nn.Module) -> list[str]:
    """Names of the learner's stores that have no capacity (joint keeps every image seen)."""
    return [name for name, value in vars(learner).items()
            if not name.startswith("_") and _is_store(value) and getattr(value, "capacity", None) is None]


# --------------------------------------------------------------------------------------------
# the capacity a budget gives
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetFit:
    """How a learner's largest footprint grows with its replay capacity: ``fixed + capacity * per_example``."""

    fixed: dict[str, int]  # bytes held whatever the capacity (old model, Fisher, binding, ...), by part
    per_example: dict[str, int]  # bytes per example at capacity, by part (image, label, codes, logits, ...)

    def bytes_at(self, capacity: int) -> int:
        return sum(self.fixed.values()) + capacity * sum(self.per_example.values())

    def capacity(self, budget: int) -> int:
        """The most examples whose footprint fits ``budget`` bytes (0 when nothing is stored per example)."""
        per = sum(self.per_example.values())
        return max(budget - sum(self.fixed.values()), 0) // per if per > 0 else 0


def fit_of(one: nn.Module, two: nn.Module) -> BudgetFit:
    """How the footprint grows, from a learner built with replay capacity 1 and one with capacity 2.

    The footprint is linear in the capacity (per-slot arrays), so two probes give the slope per part.
    """
    a, b = max_memory_bytes(one), max_memory_bytes(two)
    per = {p: b.get(p, 0) - a.get(p, 0) for p in b}
    fixed = {p: a[p] - per.get(p, 0) for p in a}
    return BudgetFit(fixed={p: n for p, n in fixed.items() if n}, per_example={p: n for p, n in per.items() if n})


def _describe(parts: dict[str, int]) -> str:
    return ", ".join(f"{p} {b:,}" for p, b in sorted(parts.items(), key=lambda kv: -kv[1])) or "nothing"


def capacity_for_budget(budget: Any, build: Callable[[int], nn.Module], learner_name: str) -> int:
    """The replay capacity (examples) for ``learner_name`` whose largest footprint fits ``budget``.

    ``budget``: ``memory.budget`` as configured (parsed here). ``build(capacity)`` makes the learner
    with that replay capacity (on the CPU: it is only measured). A budget below the learner's fixed
    bytes, or one that holds no example for a learner that stores examples, raises ``ConfigError``.
    A learner with an unbounded store (``joint``, the upper bound) is exempt: a warning, capacity 0.
    """
    total = parse_bytes(budget)
    # The probes draw their weights from the global generator: restore it, so the run's initialisation
    # is what it would be with memory.size.
    with torch.random.fork_rng(devices=[]):
        one = build(1)
        unbounded = unbounded_stores(one)
        if unbounded:
            warnings.warn(f"memory.budget does not apply to {learner_name}: it keeps every training image seen "
                          f"(the upper bound; its {', '.join(unbounded)} has no capacity)", stacklevel=2)
            return 0
        fit = fit_of(one, build(2))
    fixed, per = sum(fit.fixed.values()), sum(fit.per_example.values())
    if fixed > total or (per > 0 and fit.capacity(total) == 0):
        reasons = [f"it keeps {fixed:,} bytes whatever the memory size ({_describe(fit.fixed)})"] if fixed else []
        reasons += [f"each stored example takes {per:,} bytes ({_describe(fit.per_example)})"] if per else []
        raise ConfigError(f"config key memory.budget={budget!r} ({total:,} bytes) is too small for {learner_name}: "
                          f"{'; '.join(reasons)}; it needs at least {fixed + per:,} bytes")
    return fit.capacity(total)
