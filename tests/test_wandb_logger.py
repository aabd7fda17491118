"""W&B logger, offline record reader and run-folder helpers (real wandb, no network)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from continual.logging.run_folder import RunFolderError, git_revision, prepare_run_dir, source_digest, write_text_atomic
from continual.logging.wandb_logger import WandbLogger, resolve_mode
from continual.logging.wandb_records import (
    WandbRecordError,
    find_offline_run_file,
    iter_records,
    read_offline_run,
)


@pytest.fixture(autouse=True)
def _isolated_wandb_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's W&B credentials and settings out of the tests."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_DIR", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def _tiny_png(path: Path) -> Path:
    """A valid 2x2 grey PNG, without pulling in matplotlib or PIL."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    raw = b"".join(b"\x00" + bytes([40, 200]) for _ in range(2))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


CONFIG = {
    "seed": 3,
    "learner": {"lr": 0.01, "backbone": {"name": "mlp", "width": [64, 32]}},
    # Longer than one 32 KiB block: exercises FIRST/MIDDLE/LAST chunks.
    "notes": "n" * 40_000,
}


def test_offline_run_round_trip(tmp_path: Path) -> None:
    start = time.perf_counter()
    logger = WandbLogger(CONFIG, tmp_path / "run", group="g1", tags=["unit"], name="round-trip")
    init_s = time.perf_counter() - start
    assert logger.mode == "offline"

    accs = [0.9, 0.75, 0.6]
    for exp, acc in enumerate(accs):
        logger.log_experience(exp, {"acc/avg": acc, "acc/seen": acc + 0.05, "forgetting": None if exp == 0 else 0.1})
    R = [[0.9], [0.8, 0.7], [0.7, 0.6, float("nan")]]
    logger.log_accuracy_matrix(R, _tiny_png(tmp_path / "heatmap.png"))
    logger.log_report({"final": {"acc": 0.6, "curve": [0.9, 0.75, 0.6]}, "bwt": -0.15, "skipped": None})
    start = time.perf_counter()
    logger.finish()
    finish_s = time.perf_counter() - start
    logger.finish()  # a second call is a no-op
    print(f"offline init {init_s:.3f}s, finish {finish_s:.3f}s")

    path = find_offline_run_file(tmp_path / "run")
    assert path == logger.record_file
    assert path.name == f"run-{logger.run_id}.wandb"
    run = read_offline_run(path)

    assert run["run"]["id"] == logger.run_id
    assert run["run"]["group"] == "g1" and run["run"]["tags"] == ["unit"]
    assert run["config"] == CONFIG

    history = run["history"]
    assert [row["experience"] for row in history] == [0, 1, 2]
    assert [row["acc/avg"] for row in history] == accs
    assert history[1]["acc/seen"] == pytest.approx(0.8)
    assert "forgetting" not in history[0] and history[2]["forgetting"] == 0.1

    summary = run["summary"]
    assert summary["report/final/acc"] == 0.6
    assert summary["report/bwt"] == -0.15
    assert not any(k.startswith("report/final/curve") or k == "report/skipped" for k in summary)
    assert summary["accuracy_matrix"]["_type"] == "table-file"
    assert summary["accuracy_matrix"]["nrows"] == 3 and summary["accuracy_matrix"]["ncols"] == 4
    assert summary["accuracy_heatmap"]["_type"] == "image-file"
    assert summary["experience"] == 2  # the last logged values stay in the summary


def test_metrics_use_experience_as_step_axis(tmp_path: Path) -> None:
    logger = WandbLogger({}, tmp_path)
    logger.finish()
    metrics = {
        r.metric.name or r.metric.glob_name: r.metric.step_metric
        for r in iter_records(logger.record_file)
        if r.WhichOneof("record_type") == "metric"
    }
    # Anytime accuracy is plotted against stream samples, everything else per experience.
    assert metrics == {"experience": "", "samples": "", "anytime/*": "samples", "*": "experience"}


def test_anytime_points_are_logged_on_the_samples_axis(tmp_path: Path) -> None:
    logger = WandbLogger({}, tmp_path)
    logger.log_anytime({"samples": 200, "n_met": 4, "accuracy": 0.5, "zero_shot": None, "per_category": {"0": 1.0}})
    logger.log_anytime({"samples": 400, "n_met": 6, "accuracy": 0.25, "zero_shot": 0.4, "per_category": {}})
    logger.finish()
    history = read_offline_run(logger.record_file)["history"]
    assert [row["samples"] for row in history] == [200, 400]
    assert [row["anytime/accuracy"] for row in history] == [0.5, 0.25]
    assert "anytime/zero_shot" not in history[0] and history[1]["anytime/zero_shot"] == 0.4
    assert not any(k.startswith("anytime/per_category") for row in history for k in row)


def test_resume_keeps_run_id(tmp_path: Path) -> None:
    first = WandbLogger({"a": 1}, tmp_path)
    first.log_experience(0, {"acc": 0.5})
    first.finish()
    second = WandbLogger({"a": 1}, tmp_path, run_id=first.run_id)
    second.log_experience(1, {"acc": 0.4})
    second.finish()
    assert second.run_id == first.run_id
    files = sorted(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2  # offline: one file per session, merged by `wandb sync`
    assert find_offline_run_file(tmp_path) == second.record_file
    assert read_offline_run(second.record_file)["history"][0]["experience"] == 1


def test_concurrent_loggers_keep_separate_runs(tmp_path: Path) -> None:
    # wandb's default would hand the second init the first, unfinished run.
    first = WandbLogger({"which": 1}, tmp_path / "one")
    second = WandbLogger({"which": 2}, tmp_path / "two")
    assert first.run_id != second.run_id
    first.log_experience(0, {"acc": 0.1})
    second.log_experience(0, {"acc": 0.2})
    second.finish()
    first.finish()
    for logger, which in ((first, 1), (second, 2)):
        run = read_offline_run(find_offline_run_file(logger.run_dir))
        assert run["config"] == {"which": which}
        assert run["history"][0]["acc"] == which / 10


def test_wandb_mode_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"
    logger = WandbLogger({"a": 1}, tmp_path, mode="offline")
    logger.log_experience(0, {"acc": 1.0})
    logger.log_report({"x": 1})
    logger.finish()
    assert logger.mode == "disabled" and logger.record_file is None
    assert not list(tmp_path.glob("wandb/*run-*"))
    monkeypatch.setenv("WANDB_MODE", "sideways")
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_mode("offline")


def _assert_fell_back(logger: WandbLogger, tmp_path: Path) -> None:
    assert logger.mode == "offline"
    logger.log_experience(0, {"acc": 0.5})
    logger.finish()
    assert read_offline_run(find_offline_run_file(tmp_path))["history"][0]["acc"] == 0.5


def test_online_without_api_key_falls_back_to_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="no W&B API key"):
        logger = WandbLogger({"a": 1}, tmp_path, mode="online")
    assert time.perf_counter() - start < 5
    _assert_fell_back(logger, tmp_path)


def test_online_with_unreachable_server_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A well-formed but fake key gets past the credential check, so wandb
    # really tries the (closed) port and gives up after init_timeout.
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="online mode unavailable"):
        logger = WandbLogger({"a": 1}, tmp_path, mode="online", init_timeout=2)
    assert time.perf_counter() - start < 10
    _assert_fell_back(logger, tmp_path)


# --- record reader ---------------------------------------------------------


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.wandb"
    bad.write_bytes(b"LEVELDB" + b"\x00" * 20)
    with pytest.raises(WandbRecordError, match="not a W&B record log"):
        read_offline_run(bad)
    with pytest.raises(FileNotFoundError, match="no offline W&B run"):
        find_offline_run_file(tmp_path)


def test_reader_detects_corruption(tmp_path: Path) -> None:
    logger = WandbLogger({"a": 1}, tmp_path / "run")
    logger.finish()
    data = bytearray(logger.record_file.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    broken = tmp_path / "broken.wandb"
    broken.write_bytes(bytes(data))
    with pytest.raises(WandbRecordError, match="checksum"):
        read_offline_run(broken)
    # A truncated tail (killed writer) is not an error: earlier records survive.
    truncated = tmp_path / "truncated.wandb"
    truncated.write_bytes(logger.record_file.read_bytes()[:-3])
    assert read_offline_run(truncated)["config"] == {"a": 1}


# --- run folder ------------------------------------------------------------


def test_prepare_run_dir_creates_nested_folder(tmp_path: Path) -> None:
    run = prepare_run_dir(tmp_path / "a" / "b")
    assert run.is_dir() and run.is_absolute()
    assert list(run.iterdir()) == []  # the probe file is gone


def test_prepare_run_dir_unwritable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; a path below a regular file fails for everyone.
        (tmp_path / "afile").write_text("not a folder")
        target = tmp_path / "afile" / "run"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "run"
    with pytest.raises(RunFolderError, match="not writable") as info:
        prepare_run_dir(target)
    assert str(target) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_write_text_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    write_text_atomic("{}", target)
    write_text_atomic('{"a": 1}', target)
    assert target.read_text() == '{"a": 1}'
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]  # no temp files left


def test_git_revision_outside_repo_and_without_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_revision(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git binary on PATH
    assert git_revision() == {"commit": None, "dirty": None}


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_revision_in_repo(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-c", "commit.gpgsign=false", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1")
    git("add", "a.txt")
    git("commit", "-q", "-m", "first")
    rev = git_revision(tmp_path)
    assert rev["dirty"] is False
    assert isinstance(rev["commit"], str) and len(rev["commit"]) == 40
    (tmp_path / "a.txt").write_text("2")
    assert git_revision(tmp_path)["dirty"] is True


def test_source_digest_names_the_code(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    first = source_digest(tmp_path / "pkg")
    (tmp_path / "pkg" / "notes.txt").write_text("changed, still not code")
    assert source_digest(tmp_path / "pkg") == first
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 3\n")
    assert source_digest(tmp_path / "pkg") != first
    (tmp_path / "pkg" / "sub" / "b.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "sub" / "b.py").rename(tmp_path / "pkg" / "b2.py")  # same bytes, other file
    assert source_digest(tmp_path / "pkg") != first
