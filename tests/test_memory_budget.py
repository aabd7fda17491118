"""Memory budgets in bytes: every learner's stored state is counted, and a budget gives each learner
the replay capacity whose largest footprint fits it (one more example would not)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from continual.config import ConfigError, validate_config
from continual.experiment import build_learner, run_experiment, seed_everything
from continual.learner import LEARNERS
from continual.memory.budget import (BudgetFit, capacity_for_budget, fit_of, max_memory_bytes, memory_bytes,
                                     parse_bytes)
from continual.metrics.report import ReportCard, format_report
from continual.stream import build_stream
from tests.conftest import TINY, compose_config

CPU = torch.device("cpu")
UNBOUNDED = {"joint"}  # keeps every image seen: exempt from budgets
TINY_EXTRA = {"gdumb": ["learner.epochs=1"]}


def _cfg(name: str, world_cache, *extra: str) -> dict:
    return compose_config([*TINY, f"learner={name}", *TINY_EXTRA.get(name, []), *extra], world_cache)


def _with_memory(cfg: dict, **memory) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["memory"] = {"size": None, "budget": None, **memory}
    return cfg


def _train(learner, stream, experiences=range(2), batch: int = 32) -> None:
    """Every training image of each experience through ``observe`` once, then ``end_experience``:
    enough to fill the memory (and ER-ACE's recent buffer) of a tiny run, and to set teachers and Fisher."""
    codes_of = stream.class_codes if stream.has_attributes else None
    for e in experiences:
        learner.begin_experience(e, stream.experiences[e])
        idx = stream.train_indices(e)
        x, y = stream.train_x[idx], stream.train_y[idx]
        codes = codes_of[y] if codes_of is not None else None
        for s in range(0, len(y) - 1, batch):
            b = slice(s, s + batch)
            learner.observe(x[b], y[b], codes[b] if codes is not None else None)
        learner.end_experience(e, x, y, codes)


def _fit(cfg: dict, stream) -> BudgetFit:
    one = build_learner(_with_memory(cfg, size=1), stream, CPU)
    two = build_learner(_with_memory(cfg, size=2), stream, CPU)
    return fit_of(one, two)


# --------------------------------------------------------------------------------------------
# parsing and config errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (0, 0), (1536000, 1536000), ("1.5MB", 1_500_000), ("800KB", 800_000), ("800kB", 800_000),
    ("2MiB", 2 * 2**20), ("1.5KiB", 1536), ("12B", 12), ("3 GB", 3 * 10**9), (" 1GiB ", 2**30),
])
def test_budget_parses_bytes_and_units(value, expected):
    assert parse_bytes(value) == expected


@pytest.mark.parametrize("value", ["1.5 mb", "1.5", "1500000", "2 MiBs", "1e6", "-1MB", "MB", "1.5Mb", "",
                                   1.5e6, True, None, [1]])
def test_budget_refuses_anything_else_naming_the_key_and_the_forms(value):
    with pytest.raises(ConfigError, match=r"memory\.budget must be bytes as an int .*'1\.5MB', '800KB', '2MiB'"):
        parse_bytes(value)


def test_budget_must_be_whole_non_negative_bytes():
    with pytest.raises(ConfigError, match=r"memory\.budget='0\.5B' is not a whole number of bytes"):
        parse_bytes("0.5B")
    with pytest.raises(ConfigError, match=r"memory\.budget must be >= 0 bytes, got -3"):
        parse_bytes(-3)


def test_config_takes_size_or_budget_not_both():
    validate_config(compose_config([*TINY, "memory.size=null", "memory.budget=1.5MB"]))
    validate_config(compose_config([*TINY, "memory.size=null", "memory.budget=150000"]))
    validate_config(compose_config([*TINY, "~memory.size", "memory.budget=2MiB"]))  # absent is null
    with pytest.raises(ConfigError, match=r"memory\.size=48 and memory\.budget='1\.5MB' are both set.*memory\.size=null"):
        validate_config(compose_config([*TINY, "memory.budget=1.5MB"]))
    with pytest.raises(ConfigError, match=r"memory\.size is missing: set memory\.size \(images\) or memory\.budget"):
        validate_config(compose_config([*TINY, "memory.size=null"]))
    with pytest.raises(ConfigError, match=r"memory\.budget must be bytes"):
        validate_config(compose_config([*TINY, "memory.size=null", "memory.budget=1.5mb"]))
    with pytest.raises(ConfigError, match=r"unknown config key memory\.bytes"):
        validate_config(compose_config([*TINY, "+memory.bytes=3"]))


# --------------------------------------------------------------------------------------------
# what is counted
# --------------------------------------------------------------------------------------------


def _checkpoint_extra_bytes(learner) -> dict[str, int]:
    """Bytes of the tensors in ``checkpoint_state`` beyond the model and its optimiser, by top-level key.

    What a learner must save to resume exactly is what it holds between steps, so this is an
    independent account of its stored state. Not counted, as in ``memory_bytes``: the trainable
    modules' own entries, the optimiser, and random generators' states.
    """
    trainable = {n for n, m in learner.named_children() if any(p.requires_grad for p in m.parameters())}

    def size(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.nbytes
        if isinstance(value, dict):
            return sum(size(v) for k, v in value.items() if "gen" not in str(k))  # generator states
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return 0

    state = learner.checkpoint_state()
    out = {k: size(v) for k, v in state.items() if k not in ("model", "optimizer") and "gen" not in k}
    for k, v in state["model"].items():
        if k.split(".")[0] not in trainable:
            out[f"model.{k.split('.')[0]}"] = out.get(f"model.{k.split('.')[0]}", 0) + size(v)
    return out


@pytest.mark.parametrize("name", LEARNERS.names())
def test_every_stored_tensor_is_counted(name, world_cache):
    """The parts sum to exactly what the learner's checkpoint holds beyond its model and optimiser,
    before training (teachers and binding already exist) and after two experiences (memory full,
    teacher, Fisher and anchor set, stored logits, ER-ACE's recent buffer)."""
    cfg = _cfg(name, world_cache)
    stream = build_stream(cfg["benchmark"])
    seed_everything(0)
    learner = build_learner(cfg, stream, CPU)
    for moment in ("built", "trained"):
        if moment == "trained":
            _train(learner, stream)
        parts, saved = memory_bytes(learner), _checkpoint_extra_bytes(learner)
        assert all(isinstance(v, int) and v >= 0 for v in parts.values())
        assert sum(parts.values()) == sum(saved.values()), f"{name} ({moment}): counted {parts}, checkpoint holds {saved}"
    held, most = memory_bytes(learner), max_memory_bytes(learner)
    if name not in UNBOUNDED:
        assert held == most, f"{name}: after filling, every part holds its maximum"  # the memory is full
    assert set(held) == set(most)


PARTS = {
    "er": {"images", "labels", "attribute_codes", "labels_host"},
    "derpp": {"images", "labels", "attribute_codes", "labels_host", "logits", "logit_widths"},
    "er_ace": {"images", "labels", "attribute_codes", "labels_host", "recent_images", "recent_labels"},
    "lwf": {"old_model"},
    "icarl": {"images", "labels", "attribute_codes", "herding_ranks", "old_model", "class_means"},
    "ewc": {"fisher", "anchor"},
    "child": {"images", "labels", "attribute_codes", "labels_host", "binding", "label_counts"},
    "gdumb": {"images", "labels", "attribute_codes", "labels_host"},
    "finetune": set(),
    "joint": {"images", "labels"},
}


@pytest.mark.parametrize("name", LEARNERS.names())
def test_each_learner_reports_its_parts_by_name(name, world_cache):
    assert name in PARTS, f"a new learner: list the parts {name} keeps in PARTS"
    cfg = _cfg(name, world_cache)
    learner = build_learner(cfg, build_stream(cfg["benchmark"]), CPU)
    assert set(memory_bytes(learner)) == PARTS[name]


def test_parts_hold_what_they_say(world_cache):
    cfg = _cfg("derpp", world_cache)
    stream = build_stream(cfg["benchmark"])
    learner = build_learner(cfg, stream, CPU)
    _train(learner, stream, range(1))
    n, image = len(learner.memory), math.prod(stream.image_shape)  # uint8: one byte per value
    held = memory_bytes(learner)
    assert n == cfg["memory"]["size"]
    assert held["images"] == n * image and held["labels"] == n * 8
    assert held["logits"] == n * learner.memory.logits.shape[1] * 4  # float32, padded to every category
    teacher = build_learner(_cfg("lwf", world_cache), stream, CPU)
    assert memory_bytes(teacher)["old_model"] == sum(t.nbytes for t in teacher.teacher.state_dict().values()
                                                     if isinstance(t, torch.Tensor))


# --------------------------------------------------------------------------------------------
# budget -> capacity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(LEARNERS.names()) - UNBOUNDED))
def test_capacity_from_a_budget_fits_and_one_more_example_would_not(name, world_cache):
    cfg = _cfg(name, world_cache)
    stream = build_stream(cfg["benchmark"])
    fit = _fit(cfg, stream)
    per = sum(fit.per_example.values())
    budget = fit.bytes_at(20) + per // 2  # room for 20.5 examples beyond the fixed parts
    seed_everything(0)
    learner = build_learner(_with_memory(cfg, budget=budget), stream, CPU)
    capacity = getattr(learner.memory, "capacity", 0) if per else 0
    assert capacity == (20 if per else 0)
    _train(learner, stream, range(1))  # 96 images: memory (and ER-ACE's recent buffer) full, teacher and Fisher set
    held = sum(memory_bytes(learner).values())
    assert held == fit.bytes_at(capacity) <= budget  # full: the footprint the fit predicts
    assert sum(max_memory_bytes(learner).values()) <= budget
    if per:
        assert fit.bytes_at(capacity + 1) > budget


def test_a_budget_leaves_the_initialisation_as_memory_size_does(world_cache):
    """The probes that measure the footprint draw weights too; the run's generator is restored after them."""
    cfg = _cfg("icarl", world_cache)
    stream = build_stream(cfg["benchmark"])
    fit = _fit(cfg, stream)
    seed_everything(0)
    by_size = build_learner(_with_memory(cfg, size=20), stream, CPU)
    after_size = torch.rand(3)
    seed_everything(0)
    by_budget = build_learner(_with_memory(cfg, budget=fit.bytes_at(20)), stream, CPU)
    assert by_budget.memory.capacity == 20
    assert torch.equal(torch.rand(3), after_size)
    a, b = by_size.state_dict(), by_budget.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def _capacity(name: str, budget: int, world_cache) -> int:
    cfg = _cfg(name, world_cache)
    stream = build_stream(cfg["benchmark"])
    learner = build_learner(_with_memory(cfg, budget=budget), stream, CPU)
    return getattr(getattr(learner, "memory", None), "capacity", 0)  # LwF, EWC: no memory at all


def test_derpp_holds_fewer_images_than_er_and_icarl_fewer_by_its_teacher(world_cache):
    stream = build_stream(_cfg("er", world_cache)["benchmark"])
    fits = {n: _fit(_cfg(n, world_cache), stream) for n in ("er", "derpp", "icarl", "lwf")}
    budget = 500 * math.prod(stream.image_shape)  # the bytes of 500 images
    er, derpp, icarl = (_capacity(n, budget, world_cache) for n in ("er", "derpp", "icarl"))
    assert derpp < er < 500  # logits (and their widths) ride along with every image
    assert derpp == budget // sum(fits["derpp"].per_example.values())
    # iCaRL's frozen teacher (and class means) come out of the same bytes: that many fewer exemplars.
    teacher = fits["icarl"].fixed["old_model"] + fits["icarl"].fixed["class_means"]
    # Per exemplar iCaRL keeps a herding rank where ER keeps a host copy of the label: 8 bytes each.
    assert sum(fits["icarl"].per_example.values()) == sum(fits["er"].per_example.values())
    assert er - icarl == pytest.approx(teacher / sum(fits["er"].per_example.values()), abs=1)
    # LwF keeps no examples: its whole footprint is the teacher, the size of the model itself.
    assert fits["lwf"].per_example == {} and set(fits["lwf"].fixed) == {"old_model"}
    assert fits["lwf"].fixed["old_model"] == fits["icarl"].fixed["old_model"]


def test_a_budget_below_the_fixed_parts_fails_naming_them(world_cache):
    stream = build_stream(_cfg("lwf", world_cache)["benchmark"])
    teacher = _fit(_cfg("lwf", world_cache), stream).fixed["old_model"]
    with pytest.raises(ConfigError, match=rf"memory\.budget={teacher - 1} .* too small for lwf: it keeps "
                                          rf"{teacher:,} bytes whatever the memory size \(old_model {teacher:,}\)"):
        _capacity("lwf", teacher - 1, world_cache)
    with pytest.raises(ConfigError, match=r"too small for ewc: .*\(fisher [\d,]+, anchor [\d,]+\)"):
        _capacity("ewc", "1KB", world_cache)
    with pytest.raises(ConfigError, match=r"too small for er: each stored example takes 3,120 bytes \(images 3,072, "
                                          r"attribute_codes 32, labels 8, labels_host 8\); it needs at least 3,120 bytes"):
        _capacity("er", 3000, world_cache)  # not even one example
    assert _capacity("lwf", teacher, world_cache) == 0


def test_joint_is_exempt_and_says_so(world_cache):
    cfg = _cfg("joint", world_cache)
    stream = build_stream(cfg["benchmark"])
    with pytest.warns(UserWarning, match="memory.budget does not apply to joint: it keeps every training image"):
        learner = build_learner(_with_memory(cfg, budget=1000), stream, CPU)
    _train(learner, stream, range(1))
    assert memory_bytes(learner)["images"] == len(stream.train_indices(0)) * math.prod(stream.image_shape)


def test_capacity_for_budget_builds_on_what_it_is_given():
    calls = []

    def build(capacity: int):
        calls.append(capacity)
        learner = torch.nn.Linear(2, 2)
        learner.teacher = torch.nn.Linear(2, 2).requires_grad_(False)  # 24 bytes
        return learner

    assert capacity_for_budget("1KB", build, "toy") == 0 and calls == [1, 2]


# --------------------------------------------------------------------------------------------
# the run folder
# --------------------------------------------------------------------------------------------


def test_report_records_the_bytes_held(tmp_path, world_cache):
    budget = 40 * 3120  # 40 examples of ER on the tiny world (3 x 32 x 32 image, label, 4 codes, host label)
    cfg = _cfg("er", world_cache, "memory.size=null", f"memory.budget={budget}")
    card = run_experiment(cfg, tmp_path / "run", print_fn=lambda _: None)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["memory_bytes"] == card.memory_bytes
    assert card.memory_bytes["images"] == 40 * 3 * 32 * 32 and sum(card.memory_bytes.values()) == budget
    assert ReportCard.from_dict(saved).memory_bytes == card.memory_bytes
    line = next(line for line in format_report(card).splitlines() if line.startswith("memory held"))
    assert line.startswith("memory held                 124.8 kB  (images 122.9 kB, attribute_codes 1.3 kB")
    assert len(line) <= 100 and not line.endswith("...")  # the largest parts that fit, not a cut line
