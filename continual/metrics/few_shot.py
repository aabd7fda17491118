"""Few-shot evaluation from embeddings: N-way K-shot prototype episodes and Lake et al.'s one-shot runs
(the official run folders, or runs built the same way from labelled drawings: ``lake_style_trials``).

Distance: cosine. Both protocols classify a query by the highest cosine similarity to a class's
prototype (the mean of its support embeddings; with one shot, the support embedding itself).
Embeddings here come from a backbone trained under a softmax classifier, whose feature norm
tracks confidence rather than identity; normalising it away is what makes nearest-centroid
strong on such features (Wang et al., SimpleShot, 2019). Snell et al.'s prototypical networks
prefer squared euclidean, but their embedding is trained for that distance and ours is not.

Accuracies and errors are fractions in [0, 1], like every other number on the report card
(Lake et al. and the field guide quote percent: multiply by 100).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from continual.stream.omniglot import preprocess_pngs

_EPISODE_CHUNK = 256  # episodes scored per vectorised step: bounds memory at (chunk, N, K+Q, D)


def _cosine_nearest(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar prototype for every query.

    queries ``(..., Q, D)``, prototypes ``(..., P, D)`` -> ``(..., Q)`` long.
    """
    sim = F.normalize(queries, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(-1, -2)  # (..., Q, P)
    return sim.argmax(-1)


def prototype_episodes(embedding: torch.Tensor, labels: torch.Tensor, classes: list[int], n_way: int,
                       k_shot: int, n_query: int, n_episodes: int, seed: int) -> dict:
    """Mean accuracy of nearest-prototype classification over random N-way K-shot episodes.

    Each episode draws ``n_way`` of ``classes`` and, per class, ``k_shot`` support and ``n_query``
    query images without replacement; a query is assigned the class of the most cosine-similar
    prototype (mean support embedding). Returns ``{"accuracy", "ci95", "n_way", "k_shot",
    "n_query", "episodes"}`` with ``ci95 = 1.96 * std / sqrt(episodes)`` over per-episode accuracies.
    """
    embedding = embedding.detach().float().cpu()  # (M, D)
    labels = labels.detach().long().cpu()  # (M,)
    if embedding.ndim != 2 or labels.shape != embedding.shape[:1]:
        raise ValueError(f"embedding must be (M, D) and labels (M,), got {tuple(embedding.shape)} "
                         f"and {tuple(labels.shape)}")
    if not 2 <= n_way <= len(classes):
        raise ValueError(f"n_way must be in 2..{len(classes)} (the number of classes), got {n_way}")
    if k_shot < 1 or n_query < 1 or n_episodes < 1:
        raise ValueError(f"k_shot, n_query and n_episodes must be >= 1, got {k_shot}, {n_query}, {n_episodes}")
    pools = [(labels == c).nonzero().squeeze(1) for c in classes]
    counts = torch.tensor([len(p) for p in pools])
    if int(counts.min()) < k_shot + n_query:
        c = classes[int(counts.argmin())]
        raise ValueError(f"class {c} has {int(counts.min())} images, fewer than k_shot + n_query = {k_shot + n_query}")
    # (C, max_count) index table padded with -1, so images are drawn for all episodes at once.
    table = torch.full((len(classes), int(counts.max())), -1, dtype=torch.long)
    for i, p in enumerate(pools):
        table[i, : len(p)] = p

    gen = torch.Generator().manual_seed(seed)
    n_take = k_shot + n_query
    accs = []
    for start in range(0, n_episodes, _EPISODE_CHUNK):
        E = min(_EPISODE_CHUNK, n_episodes - start)
        way = torch.rand(E, len(classes), generator=gen).argsort(1)[:, :n_way]  # (E, N) rows of table
        # Random keys with padding pushed last: the first n_take columns are a uniform draw without
        # replacement from each class's real images.
        keys = torch.rand(E, n_way, table.shape[1], generator=gen)
        keys[table[way] < 0] = 2.0
        pick = keys.argsort(2)[:, :, :n_take]  # (E, N, K+Q)
        idx = table[way].gather(2, pick)  # (E, N, K+Q) image indices
        z = embedding[idx]  # (E, N, K+Q, D)
        prototypes = z[:, :, :k_shot].mean(2)  # (E, N, D)
        queries = z[:, :, k_shot:].reshape(E, n_way * n_query, -1)  # (E, N*Q, D)
        truth = torch.arange(n_way).repeat_interleave(n_query)  # (N*Q,)
        pred = _cosine_nearest(queries, prototypes)  # (E, N*Q)
        accs.append((pred == truth).float().mean(1))
    acc = torch.cat(accs).double()  # (episodes,)
    std = float(acc.std(unbiased=True)) if n_episodes > 1 else 0.0
    return {"accuracy": float(acc.mean()), "ci95": 1.96 * std / math.sqrt(n_episodes), "n_way": n_way,
            "k_shot": k_shot, "n_query": n_query, "episodes": n_episodes}


def few_shot_report(embedding: torch.Tensor, labels: torch.Tensor, classes: list[int],
                    shots: tuple[int, ...] = (1, 5), n_way: int = 5, n_query: int = 15,
                    n_episodes: int = 600, seed: int = 0) -> dict:
    """``{"5way_1shot": {...}, "5way_5shot": {...}}``: ``prototype_episodes`` for every K in ``shots``.

    ``n_way`` is clipped to the number of classes; ``n_query`` is clipped per K to what the
    smallest class leaves after its K shots; a K for which some class has fewer than K + 1
    images is skipped. Empty when fewer than two classes are given.
    """
    labels = labels.detach().long().cpu()
    if len(classes) < 2:
        return {}
    n_way = min(n_way, len(classes))
    smallest = min(int((labels == c).sum()) for c in classes)
    out = {}
    for k in shots:
        if smallest < k + 1:
            continue
        out[f"{n_way}way_{k}shot"] = prototype_episodes(embedding, labels, classes, n_way, k,
                                                         min(n_query, smallest - k), n_episodes, seed)
    return out


# --------------------------------------------------------------------------------------------
# Lake et al. (2015) 20-way one-shot classification runs
# --------------------------------------------------------------------------------------------

LABELS_FILE = "class_labels.txt"


def read_one_shot_run(run_dir: Path, root: Path) -> list[tuple[Path, Path]]:
    """The (test image, training image of the same class) pairs of one run.

    ``class_labels.txt`` holds one line per test item, ``runNN/test/itemNN.png runNN/training/classNN.png``,
    paths relative to the folder that holds the runs.
    """
    pairs = []
    for n, line in enumerate((run_dir / LABELS_FILE).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{run_dir / LABELS_FILE} line {n}: expected 'test.png training.png', got {line!r}")
        pairs.append((root / parts[0], root / parts[1]))
    if not pairs:
        raise ValueError(f"{run_dir / LABELS_FILE} lists no test items")
    return pairs


def lake_one_shot(embed_fn: Callable[[torch.Tensor], torch.Tensor], root: str | os.PathLike,
                  image_size: int) -> dict:
    """Lake et al.'s one-shot protocol: error of nearest-neighbour classification in ``embed_fn``'s space.

    ``root`` holds ``runNN/`` folders, each with ``class_labels.txt``, ``training/`` (one image per
    class) and ``test/``. Images are preprocessed exactly as ``load_omniglot`` does (ink bright,
    antialiased downscale to ``image_size``); ``embed_fn`` maps uint8 ``(B, 1, S, S)`` to ``(B, D)``.
    A test item is right when its most cosine-similar training image is the one it is paired with.
    Returns ``{"per_run_error": [...], "error": mean, "runs": [...names]}``, errors as fractions.
    """
    root = Path(root)
    runs = sorted(p for p in root.iterdir() if p.is_dir() and (p / LABELS_FILE).is_file()) if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"no one-shot runs in {root}: expected runNN/{LABELS_FILE} folders (unpack "
                                f"all_runs.zip from github.com/brendenlake/omniglot, python/one-shot-classification)")
    errors = []
    for run in runs:
        pairs = read_one_shot_run(run, root)
        train_files = sorted({train for _, train in pairs})
        test_files = [test for test, _ in pairs]
        images = preprocess_pngs([p.read_bytes() for p in train_files + test_files], image_size)
        with torch.inference_mode():
            z = embed_fn(images).detach().float().cpu()  # (n_train + n_test, D)
        train_z, test_z = z[: len(train_files)], z[len(train_files):]
        pred = _cosine_nearest(test_z, train_z)  # (n_test,) index into train_files
        answer = torch.tensor([train_files.index(train) for _, train in pairs])
        errors.append(float((pred != answer).float().mean()))
    return {"per_run_error": errors, "error": sum(errors) / len(errors), "runs": [r.name for r in runs]}


# --------------------------------------------------------------------------------------------
# Lake-style runs built from labelled drawings (e.g. Stream.novel: alphabets never trained on)
# --------------------------------------------------------------------------------------------


def lake_style_trials(embedding: torch.Tensor, category: torch.Tensor, group: torch.Tensor, drawer: torch.Tensor,
                      *, group_names: list[str], n_way: int = 20, n_trials: int = 400, seed: int = 0) -> dict:
    """Error of ``n_way``-way one-shot trials built the way Lake et al.'s official runs are.

    A trial takes ONE group (alphabet) with at least ``n_way`` categories (smaller groups are
    skipped), ``n_way`` of its categories (a random subset when it has more) and two distinct
    drawers A and B, drawn among those who drew every category of the group: A's drawings of those
    categories are the examples, B's the test items. A test item is right when its most
    cosine-similar example is of its own category, so neither the alphabet nor the drawer's hand
    can give the answer away. Trials go round-robin over the eligible groups (in ``group_names``
    order); every draw comes from one generator seeded by ``seed``.

    ``embedding`` ``(M, D)``; ``category``, ``group``, ``drawer`` ``(M,)`` long, each category in
    one group, each (category, drawer) at most once. Returns ``{"error", "ci95", "trials",
    "alphabets", "per_alphabet", "n_way"}``: mean trial error (fraction), ``1.96 * std / sqrt(trials)``
    over per-trial errors, the eligible group names, and the mean error per group that had a trial.
    """
    embedding = embedding.detach().float().cpu()  # (M, D)
    category, group, drawer = (t.detach().long().cpu() for t in (category, group, drawer))  # (M,) each
    m = embedding.shape[0] if embedding.ndim else 0
    if embedding.ndim != 2 or m == 0 or any(t.shape != (m,) for t in (category, group, drawer)):
        shapes = ", ".join(str(tuple(t.shape)) for t in (embedding, category, group, drawer))
        raise ValueError(f"embedding must be (M, D) with M >= 1 and category, group, drawer (M,), got {shapes}")
    if n_way < 2 or n_trials < 1:
        raise ValueError(f"n_way must be >= 2 and n_trials >= 1, got {n_way} and {n_trials}")
    if min(int(category.min()), int(drawer.min()), int(group.min())) < 0 or int(group.max()) >= len(group_names):
        raise ValueError(f"category and drawer must be >= 0 and group in 0..{len(group_names) - 1} "
                         f"(indices into group_names)")
    n_cat, n_drawers = int(category.max()) + 1, int(drawer.max()) + 1
    flat = category * n_drawers + drawer  # (M,)
    if len(torch.unique(flat)) != m:
        raise ValueError("each (category, drawer) pair must appear at most once")
    table = torch.full((n_cat * n_drawers,), -1, dtype=torch.long)
    table[flat] = torch.arange(m)
    table = table.view(n_cat, n_drawers)  # (categories, drawers) -> image index, -1: not drawn
    cat_group = torch.full((n_cat,), -1, dtype=torch.long)
    cat_group[category] = group
    if not torch.equal(cat_group[category], group):
        raise ValueError("each category must belong to one group")

    # Per group: its categories (padded with -1) and the drawers who drew all of them.
    members = [(cat_group == g).nonzero().squeeze(1) for g in range(len(group_names))]
    common = torch.stack([(table[mem] >= 0).all(0) if len(mem) else torch.zeros(n_drawers, dtype=torch.bool)
                          for mem in members])  # (G, drawers)
    eligible = [g for g, mem in enumerate(members) if len(mem) >= n_way and int(common[g].sum()) >= 2]
    if not eligible:
        sizes = {group_names[g]: len(mem) for g, mem in enumerate(members)}
        raise ValueError(f"no group has n_way={n_way} categories drawn by two common drawers; categories per "
                         f"group: {sizes}")
    padded = torch.full((len(members), max(len(mem) for mem in members)), -1, dtype=torch.long)
    for g, mem in enumerate(members):
        padded[g, : len(mem)] = mem

    gen = torch.Generator().manual_seed(seed)
    trial_group = torch.tensor(eligible)[torch.arange(n_trials) % len(eligible)]  # (T,) round-robin
    # Random keys with padding (or absent drawers) pushed last: the first columns are uniform draws
    # without replacement.
    keys = torch.rand(n_trials, padded.shape[1], generator=gen)
    keys[padded[trial_group] < 0] = 2.0
    chars = padded[trial_group].gather(1, keys.argsort(1)[:, :n_way])  # (T, N)
    drawer_keys = torch.rand(n_trials, n_drawers, generator=gen)
    drawer_keys[~common[trial_group]] = 2.0
    pair = drawer_keys.argsort(1)[:, :2]  # (T, 2) drawers A, B
    examples = table[chars, pair[:, :1]]  # (T, N) image indices, drawer A
    tests = table[chars, pair[:, 1:]]  # (T, N) same categories, same order, drawer B

    truth = torch.arange(n_way)  # test item i is of example i's category
    errors = []
    for start in range(0, n_trials, _EPISODE_CHUNK):
        sl = slice(start, start + _EPISODE_CHUNK)
        pred = _cosine_nearest(embedding[tests[sl]], embedding[examples[sl]])  # (E, N)
        errors.append((pred != truth).float().mean(1))
    err = torch.cat(errors).double()  # (T,)
    std = float(err.std(unbiased=True)) if n_trials > 1 else 0.0
    per_alphabet = {group_names[g]: float(err[trial_group == g].mean()) for g in eligible if (trial_group == g).any()}
    return {"error": float(err.mean()), "ci95": 1.96 * std / math.sqrt(n_trials), "trials": n_trials,
            "alphabets": [group_names[g] for g in eligible], "per_alphabet": per_alphabet, "n_way": n_way}


__all__ = ["few_shot_report", "lake_one_shot", "lake_style_trials", "prototype_episodes", "read_one_shot_run"]
