"""The report card: continual-learning metrics, their console table and the accuracy heat map.

Pure functions over the accuracy matrix ``R`` (no training code). ``R`` is a float array of shape
(T, T): ``R[i, j]`` is the accuracy (a fraction in [0, 1]) on the test categories of experience
``j`` after training on experience ``i``. Entries with ``j > i`` are zero-shot accuracies (scored
from the attribute descriptions alone) and are NaN for a learner without attribute heads.

Indexing: the field guide (FIELD_GUIDE.md section 4) writes its formulas 1-indexed (experiences
1..T); the code is 0-indexed, so the guide's ``R[i, j]`` is ``R[i - 1, j - 1]`` here and the guide's
final row ``R[T, .]`` is ``R[T - 1, .]`` (``R[-1]``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

REPORT_WIDTH = 100  # console columns the report card is laid out for
_MISSING = "n/a"


# --------------------------------------------------------------------------------------------
# accuracy-matrix metrics
# --------------------------------------------------------------------------------------------


def _as_matrix(R: ArrayLike) -> np.ndarray:
    """``R`` as a square float array; ``None`` entries (e.g. from JSON) become NaN."""
    M = np.array(R, dtype=float)
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {M.shape}")
    return M


def average_accuracy(R: ArrayLike, i: int | None = None) -> float:
    """Average accuracy after experience ``i`` (0-indexed): mean over ``j <= i`` of ``R[i, j]``.

    Defaults to the final row, the guide's ``A_T``. Zero-shot cells (``j > i``) never count.
    """
    M = _as_matrix(R)
    T = M.shape[0]
    i = T - 1 if i is None else i
    if not 0 <= i < T:
        raise IndexError(f"experience index {i} out of range for T={T}")
    # A missing (NaN) seen cell makes the average NaN on purpose: hiding it would inflate A.
    return float(np.mean(M[i, : i + 1]))


def average_accuracy_curve(R: ArrayLike) -> list[float]:
    """``[A_1, ..., A_T]``: the average accuracy after each experience."""
    M = _as_matrix(R)
    return [average_accuracy(M, i) for i in range(M.shape[0])]


def forgetting_per_experience(R: ArrayLike) -> list[float]:
    """Forgetting of each experience ``j < T - 1`` (0-indexed; the guide's ``j < T``).

    ``max over i < T - 1 of R[i, j]`` (every row before the last, NaN ignored) minus
    ``R[T - 1, j]``.
    Taken literally from the guide, so rows ``i < j`` (zero-shot cells) take part in the max too.
    Empty when ``T == 1``.
    """
    M = _as_matrix(R)
    T = M.shape[0]
    out: list[float] = []
    for j in range(T - 1):
        earlier = M[: T - 1, j]
        earlier = earlier[~np.isnan(earlier)]
        # All earlier cells missing (only if the diagonal itself is NaN): forgetting is undefined.
        best = float(earlier.max()) if earlier.size else math.nan
        out.append(best - float(M[T - 1, j]))
    return out


def forgetting(R: ArrayLike) -> float | None:
    """``F_T``: mean forgetting over experiences ``j < T - 1``; ``None`` when ``T == 1``."""
    per_exp = forgetting_per_experience(R)
    return float(np.mean(per_exp)) if per_exp else None


def bwt(R: ArrayLike) -> float | None:
    """Backward transfer: mean over ``j < T - 1`` of ``R[T - 1, j] - R[j, j]``; None if T == 1."""
    M = _as_matrix(R)
    T = M.shape[0]
    if T == 1:
        return None
    return float(np.mean([M[T - 1, j] - M[j, j] for j in range(T - 1)]))


def fwt(R: ArrayLike, baseline: Sequence[float | None]) -> float | None:
    """Forward transfer (Lopez-Paz & Ranzato 2017): mean over ``j >= 1`` of ``R[j - 1, j] - b[j]``.

    0-indexed ``j >= 1`` is the guide's ``j > 1``. ``baseline`` (length T) holds ``b_j``, the
    accuracy of a randomly initialised model under the same protocol; ``b[0]`` is never used.
    ``R[j - 1, j]`` is the zero-shot accuracy, so a learner without zero-shot (NaN there) has no
    FWT: ``None``, as for ``T == 1`` or a missing baseline entry.
    """
    M = _as_matrix(R)
    T = M.shape[0]
    b = np.array(baseline, dtype=float)
    if b.shape != (T,):
        raise ValueError(f"baseline must have length T={T}, got shape {b.shape}")
    if T == 1:
        return None
    gains = np.array([M[j - 1, j] - b[j] for j in range(1, T)])
    if np.isnan(gains).any():
        return None
    return float(np.mean(gains))


def harmonic_mean(seen: float, unseen: float) -> float:
    """Generalised zero-shot harmonic mean ``H = 2 s u / (s + u)``; 0 when ``s + u == 0``."""
    if seen + unseen == 0:
        return 0.0
    return float(2.0 * seen * unseen / (seen + unseen))


# --------------------------------------------------------------------------------------------
# per-class and long-tail accuracy
# --------------------------------------------------------------------------------------------


def _as_int_vector(x: Any, name: str) -> np.ndarray:
    """A 1-D integer numpy array from a torch tensor, numpy array or sequence."""
    if hasattr(x, "detach"):  # a torch tensor; duck-typed so this module never imports torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class ids, got dtype {a.dtype}")
    return a.astype(np.int64)


def per_class_accuracy(pred: Any, target: Any) -> dict[int, float]:
    """Accuracy of each class present in ``target``: {class id: fraction right}."""
    p, t = _as_int_vector(pred, "pred"), _as_int_vector(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in length: {p.shape[0]} vs {t.shape[0]}")
    return {int(c): float(np.mean(p[t == c] == c)) for c in np.unique(t)}


def mean_per_class_accuracy(pred: Any, target: Any) -> float:
    """Accuracy averaged per class (GBU-style), not per image, over the classes in ``target``.

    On an imbalanced test set this keeps a frequent class from hiding a rare one.
    """
    per_class = per_class_accuracy(pred, target)
    if not per_class:
        raise ValueError("mean per-class accuracy of an empty target is undefined")
    return float(np.mean(list(per_class.values())))


def long_tail_accuracy(
    class_accuracy: Mapping[int, float], train_counts: Mapping[int, int]
) -> dict | None:
    """Mean per-class accuracy of the head, medium and tail categories.

    Split rule: the classes that have both an accuracy and a training count (a class never trained
    on, e.g. a zero-shot one, is left out) are sorted by training-image count, descending, ties by
    class id ascending, then cut into three consecutive groups whose sizes differ by at most one,
    larger groups first (``numpy.array_split`` into 3): n=6 -> 2/2/2, n=7 -> 3/2/2, n=4 -> 2/1/1.
    With n >= 3 every group is non-empty. ``None`` when fewer than 3 classes or all counts are equal
    (the stream is not long-tailed, so head and tail would be arbitrary).
    """
    classes = sorted(
        (c for c in class_accuracy if c in train_counts),
        key=lambda c: (-int(train_counts[c]), int(c)),
    )
    counts = [int(train_counts[c]) for c in classes]
    if len(classes) < 3 or len(set(counts)) == 1:
        return None
    head, medium, tail = np.array_split(np.arange(len(classes)), 3)
    group_acc = {
        name: float(np.mean([class_accuracy[classes[k]] for k in ranks]))
        for name, ranks in (("head", head), ("medium", medium), ("tail", tail))
    }
    return {
        **group_acc,
        "thresholds": {
            "head_min_count": counts[int(head[-1])],  # every head class has at least this many
            "tail_max_count": counts[int(tail[0])],  # every tail class has at most this many
        },
    }


# --------------------------------------------------------------------------------------------
# the report card
# --------------------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    """Plain, JSON-safe Python: NaN/inf -> None, numpy scalars/arrays -> float/int/list."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Mapping):
        return {_json_key(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    raise TypeError(f"cannot put a {type(x).__name__} into a report card: {x!r}")


def _json_key(k: Any) -> str | int | float | bool | None:
    if isinstance(k, np.generic):
        return k.item()
    if k is None or isinstance(k, (str, int, float, bool)):
        return k
    return str(k)


# Left out of report.json while None: a run with calibration off writes the report it wrote before.
CALIBRATED_FIELDS = ("gzsl_calibrated", "czsl_calibrated")


@dataclass
class ReportCard:
    """Every metric of one run; any of them is ``None`` when it does not apply to the learner.

    Accuracies are fractions in [0, 1]; transfers and forgetting are differences of fractions.
    """

    accuracy_matrix: list[list[float | None]]
    average_accuracy: float | None = None
    average_accuracy_curve: list[float | None] | None = None
    forgetting: float | None = None
    bwt: float | None = None
    fwt: float | None = None
    fwt_baseline: list[float | None] | None = None
    # {"accuracy", "chance", "n_categories", "by" (what named them: descriptions | attributes), and each
    # scorer's accuracy: "attributes", "descriptions" (None without a map); eval.zero_shot}
    zero_shot: dict | None = None
    # {"seen", "unseen", "harmonic", "auc" (area under the seen-unseen curve)}; with the continual means over
    # experiences (every later category unseen): "mSA", "mUA", "mH", "mAUSUC", "mJA", "n", "per_experience"
    gzsl: dict | None = None
    # Calibrated GZSL (continual.metrics.calibration; eval.calibration): seen on the category head, unseen from
    # descriptions on its scale, seen minus gamma chosen without test data: {"gamma", "source", "scores", "seen",
    # "unseen", "harmonic", "joint", "auc" (calibration-free, on that scale), "chosen": [every gamma chosen]};
    # czsl_calibrated: its continual means {"mSA", "mUA", "mH", "mAUSUC", "mJA", "n", "per_experience"}.
    # Both absent from report.json when calibration is off (CALIBRATED_FIELDS).
    gzsl_calibrated: dict | None = None
    czsl_calibrated: dict | None = None
    # {attribute name: accuracy, ..., "mean": accuracy}; continuous attributes add "mean_abs_error"
    attribute_accuracy: dict | None = None
    fine_grained: dict | None = None  # {"accuracy", "n_pairs"}
    long_tail: dict | None = None  # output of long_tail_accuracy
    learning_speed: dict | None = None  # {"k0", "k1", "k5", "k10", "area"}: accuracy after k examples
    few_shot: dict | None = None  # {"5way_1shot": {"accuracy", "ci95", ...}, ...} on never-trained categories
    # Lake-style 20-way one-shot inside never-trained alphabets: {"error", "ci95", "trials", "alphabets", ...}
    one_shot_new_alphabets: dict | None = None
    # New categories met one at a time after the stream: {"10": acc, "50": acc, "all": acc, "n_all": N, "curve"}
    one_at_a_time: dict | None = None
    # Anytime accuracy (continual.metrics.anytime): {"A_AUC", "A_last", "F_last", "curve": [{"samples", ...}]}
    anytime: dict | None = None
    timing: dict | None = None  # {"wall_s", "train_samples_per_s", "eval_share" (fraction)}
    memory_bytes: dict | None = None  # {part: bytes} the learner held at the end (continual.memory.budget)
    # Attribute supervision as noisy tags (benchmark.tags; continual.stream.tags): {"rate", "wrong", "missing",
    # the shares drawn, "attribute_loss": "on" or why it is off}; None for clean attribute codes.
    tags: dict | None = None
    extra: dict = field(default_factory=dict)  # later metrics, by name

    @classmethod
    def from_matrix(
        cls, R: ArrayLike, baseline: Sequence[float | None] | None = None, **metrics: Any
    ) -> "ReportCard":
        """A card with the matrix metrics computed from ``R``; other fields via ``metrics``."""
        M = _as_matrix(R)
        return cls(
            accuracy_matrix=_jsonable(M),
            average_accuracy=average_accuracy(M),
            average_accuracy_curve=average_accuracy_curve(M),
            forgetting=forgetting(M),
            bwt=bwt(M),
            fwt=fwt(M, baseline) if baseline is not None else None,
            fwt_baseline=list(baseline) if baseline is not None else None,
            **metrics,
        )

    def matrix(self) -> np.ndarray:
        """The accuracy matrix as a float array, ``None`` cells as NaN."""
        return _as_matrix(self.accuracy_matrix)

    def to_dict(self) -> dict:
        """JSON-safe plain Python: NaN -> None, numpy numbers -> float/int."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not (f.name in CALIBRATED_FIELDS and getattr(self, f.name) is None)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReportCard":
        """Inverse of ``to_dict``. Unknown top-level keys are kept in ``extra`` rather than lost."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        unknown = {k: v for k, v in d.items() if k not in names}
        if unknown:
            kwargs["extra"] = {**dict(kwargs.get("extra") or {}), **unknown}
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# console formatting
# --------------------------------------------------------------------------------------------


def _pct(x: float | None, decimals: int = 1) -> str:
    """``0.7166`` -> ``"71.7%"``; ``None``/NaN -> ``"n/a"``."""
    if x is None or not math.isfinite(x):
        return _MISSING
    return f"{100 * x:.{decimals}f}%"


def _pts(x: float | None) -> str:
    """A difference of accuracies in signed percentage points: ``-0.25`` -> ``"-25.0 pts"``."""
    if x is None or not math.isfinite(x):
        return _MISSING
    return f"{100 * x:+.1f} pts"


def _size(n: int) -> str:
    """Bytes in decimal units: ``320`` -> ``"320 B"``, ``1280`` -> ``"1.3 kB"``, ``1536000`` -> ``"1.5 MB"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _elide(n: int, keep: int) -> list[int | None]:
    """Indices 0..n-1, or the first and last ``keep // 2`` with ``None`` marking the gap."""
    if n <= keep:
        return list(range(n))
    half = keep // 2
    return [*range(half), None, *range(n - half, n)]


def _matrix_lines(M: np.ndarray, width: int) -> list[str]:
    """The accuracy matrix in percent, rows = after experience i, columns = tested on j."""
    T = M.shape[0]
    label_w = max(3, len(f"e{T}")) + 1
    # Widest layout that fits: 1 decimal ("100.0*" = 6 chars), then whole percents ("100*"), then
    # whole percents with the middle columns elided so a long stream still fits the console.
    for decimals, cell_w in ((1, 7), (0, 5)):
        if label_w + T * cell_w <= width:
            cols = _elide(T, T)
            break
    else:
        decimals, cell_w = 0, 5
        cols = _elide(T, 2 * ((width - label_w - cell_w) // cell_w // 2))
    rows = _elide(T, 20)  # long streams: first and last 10 rows

    def cell(i: int, j: int | None) -> str:
        if j is None:
            return "...".rjust(cell_w)
        v = M[i, j]
        text = "" if np.isnan(v) else f"{100 * v:.{decimals}f}"
        mark = "*" if j > i and text else " "  # zero-shot: not trained on j yet
        return (text + mark).rjust(cell_w)

    header = " " * label_w + "".join(
        ("..." if j is None else f"e{j + 1}").rjust(cell_w - 1) + " " for j in cols
    )
    lines = [header.rstrip()]
    for i in rows:
        if i is None:
            lines.append("...".rjust(label_w - 1))
            continue
        lines.append((f"e{i + 1}".ljust(label_w) + "".join(cell(i, j) for j in cols)).rstrip())
    return lines


def _fit(line: str, width: int = REPORT_WIDTH) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _generic(v: Any) -> str:
    """A compact rendering of an ``extra`` value of unknown meaning."""
    if v is None:
        return _MISSING
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else _MISSING
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {_generic(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return " ".join(_generic(x) for x in v)
    return str(v)


def format_report(card: ReportCard) -> str:
    """A plain-text report card for the console, laid out for ``REPORT_WIDTH`` (100) columns."""
    M = card.matrix()
    T = M.shape[0]
    rule = "=" * REPORT_WIDTH
    out = [rule, f" REPORT CARD  ({T} experience{'s' if T != 1 else ''})", rule]

    out.append("accuracy R[i, j] (%): row e_i = after training on experience i, "
               "column e_j = tested on experience j")
    out += ["  " + line for line in _matrix_lines(M, REPORT_WIDTH - 2)]
    if np.isfinite(M[np.triu_indices(T, k=1)]).any():  # a legend only when a '*' is shown
        by = (card.zero_shot or {}).get("by", "attributes")
        named = "mapped from its description" if by == "descriptions" else "by attribute compatibility"
        out.append(f"  * zero-shot (not yet trained on e_j: named {named}); blank = not measured")
    out.append("")

    def row(name: str, value: str) -> None:
        out.append(_fit(f"{name:<28}{value}"))

    row("average accuracy A_T", _pct(card.average_accuracy))
    if card.average_accuracy_curve:
        curve = [_pct(a).rstrip("%") for a in card.average_accuracy_curve]
        if len(curve) > 12:  # keep the line in the console: first and last few
            curve = curve[:5] + ["..."] + curve[-5:]
        row("A after each experience", " ".join(curve) + " (%)")
    row("forgetting F_T", _pts(card.forgetting))
    row("backward transfer BWT", _pts(card.bwt))
    fwt_text = _pts(card.fwt)
    if card.fwt is not None and card.fwt_baseline:
        b = [x for x in card.fwt_baseline[1:] if x is not None]
        if b:
            fwt_text += f"  (vs random-init baseline, mean b_j {_pct(float(np.mean(b)))})"
    row("forward transfer FWT", fwt_text)

    zs = card.zero_shot or {}
    zs_acc, chance = zs.get("accuracy"), zs.get("chance")
    if zs_acc is None:
        row("zero-shot accuracy", _MISSING)
    else:
        text = _pct(zs_acc)
        details = []
        if chance:
            details.append(f"chance {_pct(chance)}, {zs_acc / chance:.1f}x chance")
        if zs.get("n_categories"):
            details.append(f"{zs['n_categories']} categories")
        if zs.get("by") == "descriptions" and zs.get("attributes") is not None:
            details.append(f"by descriptions; by attributes {_pct(zs['attributes'])}")
        row("zero-shot accuracy", text + (f"  ({'; '.join(details)})" if details else ""))

    g = card.gzsl or {}
    if g.get("harmonic") is None and g.get("seen") is None:
        row("generalised zero-shot", _MISSING)
    else:
        row("generalised zero-shot",
            f"H {_pct(g.get('harmonic'))}  (seen {_pct(g.get('seen'))}, "
            f"unseen {_pct(g.get('unseen'))})"
            + (f"; AUSUC {_pct(g['auc'])} (calibration-free)" if g.get("auc") is not None else ""))
    if g.get("mH") is not None:
        row("continual zero-shot", f"mH {_pct(g['mH'])}  (mSA {_pct(g['mSA'])}, mUA {_pct(g['mUA'])}); "
            f"mAUSUC {_pct(g['mAUSUC'])}  (means over {g['n']} experiences)")
    if g.get("mJA") is not None:  # none in runs resumed from checkpoints older than joint accuracy
        row("continual joint mJA", f"{_pct(g['mJA'])}  (seen and unseen categories together; "
            f"mean over {g['n']} experiences)")
    gc, cc = card.gzsl_calibrated, card.czsl_calibrated
    if gc is not None:
        row("GZSL, calibrated", f"H {_pct(gc.get('harmonic'))}  (seen {_pct(gc.get('seen'))}, unseen "
            f"{_pct(gc.get('unseen'))}); gamma {gc.get('gamma', 0.0):.2f}; AUSUC {_pct(gc.get('auc'))} ({gc.get('scores')})")
    if cc is not None and cc.get("mH") is not None:
        row("continual ZSL, calibrated", f"mH {_pct(cc['mH'])}  (mSA {_pct(cc['mSA'])}, mUA {_pct(cc['mUA'])}); "
            f"mAUSUC {_pct(cc['mAUSUC'])}")

    # Continuous attributes also carry the mean absolute error of the predicted degrees: not an attribute.
    attrs = {k: v for k, v in (card.attribute_accuracy or {}).items() if k not in ("mean", "mean_abs_error")}
    mean_attr = (card.attribute_accuracy or {}).get("mean")
    if mean_attr is None:
        row("attribute accuracy", _MISSING)
    else:
        text = f"mean {_pct(mean_attr)}"
        if attrs:
            text += f" over {len(attrs)} attributes"
        if (card.attribute_accuracy or {}).get("mean_abs_error") is not None:
            text += f", mean abs error {card.attribute_accuracy['mean_abs_error']:.3f}"
        # Name the weakest attributes, as many as fit on the line (the full list is in JSON).
        worst: list[str] = []
        for v, k in sorted((v, k) for k, v in attrs.items() if v is not None)[:3]:
            candidate = text + f"  (lowest: {', '.join([*worst, f'{k} {_pct(v)}'])})"
            if 28 + len(candidate) > REPORT_WIDTH:
                break
            worst.append(f"{k} {_pct(v)}")
        row("attribute accuracy", text + (f"  (lowest: {', '.join(worst)})" if worst else ""))

    fg = card.fine_grained or {}
    row("fine-grained pairs", _MISSING if fg.get("accuracy") is None else
        f"{_pct(fg['accuracy'])}" + (f"  ({fg['n_pairs']} pairs)" if fg.get("n_pairs") else ""))

    lt = card.long_tail
    if lt is None:
        row("long tail", _MISSING)
    else:
        th = lt.get("thresholds") or {}
        row("long tail (per-class)",
            f"head {_pct(lt.get('head'))}  medium {_pct(lt.get('medium'))}  "
            f"tail {_pct(lt.get('tail'))}  (head >= {th.get('head_min_count', '?')} imgs, "
            f"tail <= {th.get('tail_max_count', '?')} imgs)")

    ls = card.learning_speed
    if ls is None:
        row("learning speed", _MISSING)
    else:
        points = "  ".join(f"k={k[1:]} {_pct(v)}" for k, v in ls.items() if k.startswith("k") and v is not None)
        row("learning speed (new cats)", f"{points}  (area {_pct(ls.get('area'))})")

    fs = card.few_shot
    if not fs:
        row("few-shot (never trained)", _MISSING)
    else:
        for name, res in fs.items():
            if isinstance(res, dict) and res.get("accuracy") is not None:
                row(f"few-shot {name.replace('_', ' ')}",
                    f"{_pct(res['accuracy'])} ± {_pct(res.get('ci95'))}  ({res.get('episodes', '?')} episodes, "
                    f"{res.get('n_classes', '?')} never-trained categories)")

    lake = card.one_shot_new_alphabets
    if lake and lake.get("error") is not None:
        row("one-shot, new alphabets", f"error {_pct(lake['error'])} ± {_pct(lake.get('ci95'))}  "
            f"({lake.get('n_way', 20)}-way in one alphabet, {lake.get('trials', '?')} trials, "
            f"{len(lake.get('alphabets') or [])} new alphabets)")
    meet = card.one_at_a_time
    if meet and meet.get("all") is not None:
        points = "  ".join(f"after {k} {_pct(v)}" for k, v in meet.items() if k.isdigit())
        row("met one at a time", f"{points}  after all {meet.get('n_all', '?')} {_pct(meet['all'])}")

    at = card.anytime
    if at and at.get("A_AUC") is not None:
        row("anytime accuracy", f"A_AUC {_pct(at['A_AUC'])}  A_last {_pct(at['A_last'])}  "
            f"F_last {_pts(at.get('F_last'))}  ({len(at.get('curve') or [])} points)")

    tm = card.timing or {}
    parts = []
    if tm.get("wall_s") is not None:
        parts.append(f"wall {tm['wall_s']:.1f} s")
    if tm.get("train_samples_per_s") is not None:
        parts.append(f"train {tm['train_samples_per_s']:,.0f} samples/s")
    if tm.get("eval_share") is not None:
        parts.append(f"eval {_pct(tm['eval_share'])} of wall time")
    row("timing", ", ".join(parts) if parts else _MISSING)
    if card.memory_bytes is not None:
        held = sorted(((b, p) for p, b in card.memory_bytes.items() if b), reverse=True)
        text, shown = _size(sum(b for b, _ in held)), []
        for i, (b, p) in enumerate(held):  # the largest parts, as many as fit on the line (all in JSON)
            more = ", ..." if i + 1 < len(held) else ""
            if 28 + len(f"{text}  ({', '.join([*shown, f'{p} {_size(b)}'])}{more})") > REPORT_WIDTH:
                shown.append("...")
                break
            shown.append(f"{p} {_size(b)}")
        row("memory held", text + (f"  ({', '.join(shown)})" if shown else ""))

    for name, value in (card.extra or {}).items():
        row(str(name), _generic(value))
    out.append(rule)
    return "\n".join(out)


# Keys of ``extra`` in format_experience_line shown as percentages rather than raw numbers.
_PERCENT_KEYS = ("acc", "zero_shot", "seen", "unseen", "harmonic", "forgetting", "bwt", "fwt")


def format_experience_line(i: int, R: ArrayLike, extra: Mapping[str, Any] | None = None) -> str:
    """One progress line after experience ``i`` (0-indexed), e.g. ``[e3/5] A_3 71.7% | loss 0.412``.

    ``extra`` values whose key mentions an accuracy-like name (``acc``, ``zero_shot``, ``seen``,
    ``unseen``, ``harmonic``, ``forgetting``, ``bwt``, ``fwt``) are shown as percentages, other
    floats with 4 significant digits.
    """
    M = _as_matrix(R)
    T = M.shape[0]
    parts = [f"[e{i + 1}/{T}] A_{i + 1} {_pct(average_accuracy(M, i))}"]
    for key, value in (extra or {}).items():
        if isinstance(value, (float, np.floating)) and any(p in key for p in _PERCENT_KEYS):
            parts.append(f"{key} {_pct(float(value))}")
        else:
            parts.append(f"{key} {_generic(_jsonable(value))}")
    return " | ".join(parts)


# --------------------------------------------------------------------------------------------
# files: heat map and JSON, both written atomically
# --------------------------------------------------------------------------------------------


def _temp_beside(path: str | os.PathLike) -> tuple[str, int]:
    """A temp file in ``path``'s directory, so ``os.replace`` is an atomic same-disk rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = "." + os.path.basename(path) + "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    return tmp, fd


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``json.dump(obj, indent=2)`` to ``path`` atomically; NaN/inf raise (pass ``card.to_dict()``).

    Readers (dashboards, ``paper/`` table builders) never see a half-written file.
    """
    tmp, fd = _temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_heatmap(R: ArrayLike, path: str | os.PathLike, title: str = "") -> None:
    """PNG heat map of ``R`` in percent; zero-shot cells (j > i) faded and hatched, NaN blank."""
    # Lazy imports: matplotlib costs ~0.5 s to import and most callers never plot. The Figure +
    # FigureCanvasAgg pair renders without pyplot, so no global backend or figure state is touched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    M = _as_matrix(R)
    T = M.shape[0]
    zero_shot = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T) True where j > i
    side = min(max(4.0, 0.45 * T + 2.5), 11.0)  # inches; capped so long streams stay legible
    fig = Figure(figsize=(side + 1.2, side), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    norm = Normalize(vmin=0.0, vmax=100.0)
    cmap = "viridis"
    pct = 100 * M
    # Two layers sharing one colour scale: trained cells opaque, zero-shot cells faded. Masked
    # (NaN or other-layer) cells are drawn transparent, so a missing cell stays blank.
    seen_img = ax.imshow(np.ma.masked_where(zero_shot | np.isnan(M), pct), cmap=cmap, norm=norm)
    ax.imshow(np.ma.masked_where(~zero_shot | np.isnan(M), pct), cmap=cmap, norm=norm, alpha=0.45)
    for i, j in zip(*np.nonzero(zero_shot & ~np.isnan(M))):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                               edgecolor="0.55", linewidth=0))

    if T <= 20:  # beyond that the numbers would be unreadable; the colours still tell the story
        fontsize = 10 if T <= 8 else 7
        for i in range(T):
            for j in range(T):
                if np.isnan(M[i, j]):
                    continue
                # Dark text on light cells: faded zero-shot cells and the yellow end of viridis.
                light = zero_shot[i, j] or pct[i, j] > 60
                ax.text(j, i, f"{pct[i, j]:.1f}" + ("*" if zero_shot[i, j] else ""),
                        ha="center", va="center", fontsize=fontsize,
                        color="black" if light else "white")

    labels = [f"e{k + 1}" for k in range(T)]
    ticks = range(T) if T <= 30 else range(0, T, max(1, T // 15))
    ax.set_xticks(list(ticks), [labels[k] for k in ticks])
    ax.set_yticks(list(ticks), [labels[k] for k in ticks])
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(T - 0.5, -0.5)
    has_zs = bool(zero_shot.any()) and not np.isnan(M[zero_shot]).all()
    # The legend rides on the x label so tight_layout keeps it clear of the tick labels.
    legend = "\n* hatched, faded: zero-shot (from attribute descriptions)" if has_zs else ""
    ax.set_xlabel("tested on experience j" + legend)
    ax.set_ylabel("after training on experience i")
    ax.set_title(title or "accuracy R[i, j] (%)")
    fig.colorbar(seen_img, ax=ax, fraction=0.046, pad=0.04, label="accuracy (%)")
    fig.tight_layout()

    tmp, fd = _temp_beside(path)
    os.close(fd)  # savefig opens the file itself
    try:
        fig.savefig(tmp, format="png", bbox_inches="tight")  # never clip the axis labels
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
