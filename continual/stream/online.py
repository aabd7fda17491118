"""Online (boundary-free) arrival orders: every training image once, no experience boundary told.

The learner sees one sequence of images; a category is new when its label first appears. The
sequence is cut into hidden *segments* (``n_segments``, by default the stream's number of
experiences) so evaluation can still fill an accuracy matrix per segment. Per stream:

- K trained categories, each with n_c >= 1 training images; S segments, 1 <= S <= K.
- Every category has a *major* segment. ``disjoint`` and ``iblurry``: when S equals the stream's
  number of experiences the majors are the stream's experiences (Omniglot keeps whole alphabets
  together); otherwise the labels 0..K-1, in the stream's order, are cut into S runs as even as
  possible (``tensor_split``). ``siblurry``: the K categories are shuffled and cut at S-1 distinct
  random points, so each segment majors 1..K-S+1 categories, every composition of K into S
  positive parts equally likely (random task sizes).
- D = ``round(disjoint_share * K)`` (Python's round, half to even) categories are *disjoint*: all
  their images in their major segment. The others are *blurry*: ``round(blurry_share * n_c)`` of
  their images, drawn at random, move out of the major segment, each to one of the S-1 other
  segments uniformly at random (none move when S = 1). ``disjoint`` mode: every category is
  disjoint (the shares are ignored). Which categories are disjoint: within each segment the
  categories get a random rank; ``iblurry`` takes the D smallest (rank, later segment first), as
  even a spread over segments as possible, Koh et al.'s "N% disjoint per task"; ``siblurry`` first
  takes one rank-0 category per segment (later segments first), then the rest of the D uniformly
  at random among all remaining categories (Moon et al.'s random partition).
- Every segment brings at least one new category (the rest of the code needs non-empty
  experiences). A segment with a disjoint category has one. A segment without one (only when
  D < S, and always the earliest segments, since later ones get disjoint categories first)
  makes its rank-0 blurry category an *anchor*: its moved images go uniformly to *later* segments
  only, at most n_c - 1 of them, so it first appears in its major segment. An anchor in the last
  segment (only when D = 0) has no later segment and moves none.
- Within a segment the images are shuffled (one random permutation per segment).

Labels are then renumbered by first appearance in the arrival order (0, 1, 2, ... exactly as the
learner meets them, so "the categories seen so far" is always a prefix), and ``experiences[j]``
lists the labels first met in segment j: a contiguous run. A blurry category whose moved image
lands before its major segment is new in that earlier segment: this is what makes the stream
blurry. Held-out labels stay last, unchanged. Even in ``disjoint`` mode the labels are permuted
*within* each experience (the shuffled segment meets them in a random order); the experiences, as
sets of labels and images, are the stream's.

Deviations from the papers' code, on purpose: Koh et al. pool M% of all blurry images and deal
them evenly over all tasks (the own task included) and require D to be a multiple of the number
of tasks; Moon et al. cut the disjoint and the blurry categories at random points separately (a
task may bring no new category) and move a random number of blurry images per task. Here M% is
per category and always leaves the major segment, and every segment brings a new category.
All randomness comes from one ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from continual.stream.stream import Stream

MODES = ("disjoint", "iblurry", "siblurry")


@dataclass(frozen=True)
class OnlineSettings:
    """How a stream is turned into one pass of images (the ``online`` config group)."""

    mode: str  # "disjoint" | "iblurry" | "siblurry"
    disjoint_share: float = 0.5  # N/100: share of categories whose images all stay in their major segment
    blurry_share: float = 0.1  # M/100: share of a blurry category's images moved to other segments
    n_segments: int | None = None  # hidden segments; None: the stream's number of experiences

    def check(self, n_categories: int | None = None) -> None:
        """Raise ValueError naming the config key of the first impossible value; ``n_categories``
        (the stream's trained categories) bounds ``n_segments`` when given."""
        if self.mode not in MODES:
            raise ValueError(f"online.mode must be one of {list(MODES)}, got {self.mode!r}")
        for key in ("disjoint_share", "blurry_share"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"online.{key} must be a number in [0, 1] (a share, not a percentage), "
                                 f"got {value!r}")
        n = self.n_segments
        if n is None:
            return
        upper = "" if n_categories is None else f" and <= {n_categories} (the stream's trained categories)"
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (n_categories is not None and n > n_categories):
            raise ValueError(f"online.n_segments must be null (the stream's experiences) or an integer >= 1{upper}, "
                             f"got {n!r}")


def online_settings_from_dict(cfg: dict) -> OnlineSettings:
    """Build settings from a plain ``online`` config dict, naming any unknown or missing key."""
    known = [f.name for f in fields(OnlineSettings)]
    for key in cfg:
        if key not in known:
            raise ValueError(f"unknown config key online.{key}; known: {known}")
    if "mode" not in cfg:
        raise ValueError(f"config key online.mode is missing; one of {list(MODES)}")
    settings = OnlineSettings(**cfg)
    settings.check()
    return settings


@dataclass(frozen=True)
class OnlinePlan:
    """Where each category and image of a stream goes, indexed by the stream's (old) labels."""

    major: list[int]  # per trained category: its major segment
    disjoint: list[bool]  # per trained category: all its images in its major segment
    anchor: list[bool]  # per trained category: blurry, moved images only to later segments
    moved: list[int]  # per trained category: images placed outside its major segment
    segments: list[torch.Tensor]  # per segment: (n_j,) long CPU indices into train_x, arrival order


def _majors(stream: Stream, mode: str, n_segments: int, g: torch.Generator) -> list[list[int]]:
    """The trained labels majoring in each segment (see the module docstring)."""
    k = sum(len(e) for e in stream.experiences)
    if mode == "siblurry":
        perm = torch.randperm(k, generator=g)
        cuts = (torch.randperm(k - 1, generator=g)[: n_segments - 1] + 1).sort().values  # distinct, in 1..K-1
        return [chunk.tolist() for chunk in perm.tensor_split(cuts)]
    if n_segments == stream.n_experiences:
        return [list(e) for e in stream.experiences]
    return [chunk.tolist() for chunk in torch.arange(k).tensor_split(n_segments)]


def _pick_disjoint(majors: list[list[int]], rank: dict[int, int], mode: str, n_disjoint: int,
                   g: torch.Generator) -> set[int]:
    """The disjoint categories: rank-0 ones first, later segments first, so that segments lacking
    one (and needing an anchor) are the earliest ones."""
    seg_of = {c: j for j, cats in enumerate(majors) for c in cats}
    last = len(majors) - 1
    if mode == "iblurry":
        priority = sorted(seg_of, key=lambda c: (rank[c], last - seg_of[c]))
    else:
        firsts = sorted((c for c in seg_of if rank[c] == 0), key=lambda c: last - seg_of[c])
        rest = [c for c in seg_of if rank[c] > 0]
        priority = firsts + [rest[i] for i in torch.randperm(len(rest), generator=g).tolist()]
    return set(priority[:n_disjoint])


def draw_online(stream: Stream, settings: OnlineSettings, seed: int) -> OnlinePlan:
    """Draw the major segment and kind of every category and the segment of every training image."""
    k = sum(len(e) for e in stream.experiences)
    settings.check(k)
    n_seg = settings.n_segments or stream.n_experiences
    y = stream.train_y.cpu()  # (N,) old labels
    counts = torch.bincount(y, minlength=k)[:k]  # (K,)
    if bool((counts == 0).any()):
        raise ValueError(f"categories {(counts == 0).nonzero().squeeze(1).tolist()} have no training image, "
                         f"so they could never appear in an online stream")
    g = torch.Generator().manual_seed(seed)

    majors = _majors(stream, settings.mode, n_seg, g)
    rank = {}  # random order of the categories within their major segment
    for cats in majors:
        for r, i in enumerate(torch.randperm(len(cats), generator=g).tolist()):
            rank[cats[i]] = r
    if settings.mode == "disjoint":
        disjoint = set(range(k))
    else:
        disjoint = _pick_disjoint(majors, rank, settings.mode, round(settings.disjoint_share * k), g)
    has_disjoint = [any(c in disjoint for c in cats) for cats in majors]
    major, anchor, moved = [0] * k, [False] * k, [0] * k
    for j, cats in enumerate(majors):
        for c in cats:
            major[c] = j
            # Why anchors: a segment whose every category was met earlier would be an empty experience.
            anchor[c] = not has_disjoint[j] and rank[c] == 0
            n_c, m_c = int(counts[c]), round(settings.blurry_share * int(counts[c]))
            if c in disjoint or n_seg == 1:
                moved[c] = 0
            elif anchor[c]:
                moved[c] = min(m_c, n_c - 1) if j < n_seg - 1 else 0
            else:
                moved[c] = m_c

    # Images of each category, grouped by label: a stable sort keeps the stream's order within one.
    by_label = torch.argsort(y, stable=True)  # (N,)
    dest = torch.empty_like(y)  # (N,) segment of every training image
    for c, idx in enumerate(by_label.split(counts.tolist())):
        idx = idx[torch.randperm(len(idx), generator=g)]
        j, m = major[c], moved[c]
        dest[idx[m:]] = j
        if m == 0:
            continue
        if anchor[c]:
            dest[idx[:m]] = j + 1 + torch.randint(n_seg - 1 - j, (m,), generator=g)  # later segments only
        else:
            r = torch.randint(n_seg - 1, (m,), generator=g)  # (m,) uniform over the S-1 other segments
            dest[idx[:m]] = r + (r >= j).long()
    segments = []
    for j in range(n_seg):
        idx = (dest == j).nonzero().squeeze(1)
        segments.append(idx[torch.randperm(len(idx), generator=g)])
    return OnlinePlan(major, [c in disjoint for c in range(k)], anchor, moved, segments)


def online_order(stream: Stream, settings: OnlineSettings, seed: int) -> tuple[Stream, list[torch.Tensor]]:
    """The stream relabelled by first appearance, and the segments: per hidden segment, ``(n_j,)``
    long CPU indices into ``stream.train_x`` in arrival order. Every training image is in exactly one
    segment; ``experiences[j]`` of the returned stream are the labels first met in segment j."""
    plan = draw_online(stream, settings, seed)
    k = len(plan.major)
    arrival = torch.cat(plan.segments)  # (N,) image indices in the order the learner meets them
    labels = stream.train_y.cpu()[arrival]  # (N,) old labels in arrival order
    position = torch.arange(len(arrival))
    first = torch.full((k,), len(arrival), dtype=torch.long).scatter_reduce(0, labels, position, "amin")  # (K,)
    order = first.argsort().tolist()  # old labels by first appearance: order[new] = old
    sizes = torch.tensor([len(s) for s in plan.segments])
    segment_at = torch.arange(len(sizes)).repeat_interleave(sizes)  # (N,) segment of each arrival position
    first_segment = segment_at[first[order]].tolist()  # per new label, where it is first met
    experiences = [[new for new, j in enumerate(first_segment) if j == seg] for seg in range(len(sizes))]
    return replace(stream.relabel(order), experiences=experiences), plan.segments


__all__ = ["MODES", "OnlinePlan", "OnlineSettings", "draw_online", "online_order", "online_settings_from_dict"]
