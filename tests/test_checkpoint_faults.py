"""Checkpoints under faults: kill -9 at several points, damaged files, unusable directories,
full disks, stale data and unseeded runs. A checkpoint never hands back the wrong model."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import stat
import tempfile

import numpy as np
import pytest
import torch
from _forked import run_in_child
from sklearn.datasets import make_blobs
from test_checkpoint import _assert_same_fit

from spectralnet_seg.cluster import NeuralEigenClustering, _neural_io
from spectralnet_seg.cluster._checkpoints import (
    CheckpointError,
    CheckpointWarning,
    data_checksum,
    previous_checkpoint,
)
from spectralnet_seg.cluster._neural_base import BaseNeuralEigenClustering
from spectralnet_seg.data import as_feature_source
from spectralnet_seg.kernels import RBFKernel

MAX_ITER, EVERY = 20, 5


@pytest.fixture(scope="module")
def X():
    return make_blobs(n_samples=150, centers=3, n_features=4, random_state=0)[0]


@pytest.fixture(scope="module")
def reference(X):
    """The uninterrupted fit, without checkpoints."""
    return _make().fit(X)


def _make(**params):
    defaults = dict(kernel=RBFKernel(gamma=0.2), hidden_layer_sizes=(16,), batch_size=64,
                    max_iter=MAX_ITER, learning_rate=5e-3, device="cpu", random_state=0,
                    checkpoint_every=EVERY, n_init=2)
    return NeuralEigenClustering(3, **{**defaults, **params})


def _count_steps(monkeypatch) -> list[int]:
    original = BaseNeuralEigenClustering._train_step
    steps: list[int] = []

    def counting(self, run, X, objective):
        steps.append(run.step)
        return original(self, run, X, objective)

    monkeypatch.setattr(BaseNeuralEigenClustering, "_train_step", counting)
    return steps


def _only_checkpoint(directory) -> os.PathLike:
    files = list(directory.glob("*.pt"))
    assert len(files) == 1, files
    return files[0]


def _step_of(path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


# ----------------------------------------------------------------------------- kill -9
def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def _fit_killed_while_writing(X, directory, step):
    """SIGKILL with half of the checkpoint of ``step`` written to its temporary file."""
    real_save = torch.save

    def half_save(payload, stream):
        if payload["step"] == step:
            real_save(payload, stream)
            stream.truncate(stream.tell() // 2)
            stream.flush()
            _kill_self()
        real_save(payload, stream)

    torch.save = half_save
    _make(checkpoint_dir=directory).fit(X)


def _fit_killed_between_renames(X, directory, step):
    """SIGKILL after the latest checkpoint became the previous one, before the new one is
    renamed into place (the only moment with no file under the checkpoint's name)."""
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".prev"):
            if _step_of(dst) == step - EVERY:
                _kill_self()

    os.replace = replace
    _make(checkpoint_dir=directory).fit(X)


def _fit_killed_at_step(X, directory, step):
    """SIGKILL in the middle of a training step (between two checkpoints)."""
    original = BaseNeuralEigenClustering._train_step

    def step_then_die(self, run, X, objective):
        out = original(self, run, X, objective)
        if run.step == step:
            _kill_self()
        return out

    BaseNeuralEigenClustering._train_step = step_then_die
    _make(checkpoint_dir=directory).fit(X)


def _fit_killed_after_saving(X, directory, step):
    """SIGKILL right after the checkpoint of ``step`` is complete."""
    real_save = _neural_io.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if payload["step"] == step:
            _kill_self()

    _neural_io.save_checkpoint = save_then_die
    _make(checkpoint_dir=directory).fit(X)


def test_kill_9_at_four_points_resumes_to_the_uninterrupted_result(X, reference, tmp_path,
                                                                   monkeypatch):
    kills = [  # (child, state on disk afterwards: latest step or None, previous step or None)
        (lambda: _fit_killed_while_writing(X, tmp_path, 10), 5, None),
        (lambda: _fit_killed_between_renames(X, tmp_path, 15), None, 10),
        (lambda: _fit_killed_at_step(X, tmp_path, 13), None, 10),
        (lambda: _fit_killed_after_saving(X, tmp_path, 15), 15, 10),
    ]
    for child, latest, previous in kills:
        exit_code, report = run_in_child(child)
        assert exit_code == -signal.SIGKILL, report
        names = {p.name for p in tmp_path.iterdir()}
        [stem] = {n.split(".")[0] for n in names}
        path = tmp_path / f"{stem}.pt"
        assert (_step_of(path) if path.exists() else None) == latest
        prev = previous_checkpoint(path)
        assert (_step_of(prev) if prev.exists() else None) == previous
    steps = _count_steps(monkeypatch)
    resumed = _make(checkpoint_dir=tmp_path).fit(X)
    assert steps == list(range(15, MAX_ITER))  # from the last complete checkpoint
    _assert_same_fit(resumed, reference)


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(X, reference, tmp_path,
                                                                   damage):
    _make(checkpoint_dir=tmp_path).fit(X)
    path = _only_checkpoint(tmp_path)
    assert _step_of(path) == MAX_ITER and _step_of(previous_checkpoint(path)) == MAX_ITER - EVERY
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3] if damage == "truncate"
                     else np.random.default_rng(0).bytes(len(data)))
    with pytest.warns(CheckpointWarning, match=re.escape(str(path)) + ".*truncated or not a "
                      "checkpoint.*Resumed from the previous checkpoint.*step 15"):
        resumed = _make(checkpoint_dir=tmp_path).fit(X)
    _assert_same_fit(resumed, reference)
    assert _step_of(path) == MAX_ITER  # rewritten, readable again


def test_a_flipped_byte_inside_a_weight_is_caught_by_the_archive_crc(X, reference, tmp_path):
    # torch.load does not check CRCs: the damaged weight used to be resumed from silently.
    import zipfile
    _make(checkpoint_dir=tmp_path).fit(X)
    path = _only_checkpoint(tmp_path)
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename),
                     key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = np.frombuffer(
        bytes(data[record.header_offset + 26:record.header_offset + 30]), dtype="<u2")
    data[record.header_offset + 30 + name_length + extra_length + 3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.warns(CheckpointWarning, match="truncated or not a checkpoint.*Resumed from "
                      "the previous checkpoint"):
        resumed = _make(checkpoint_dir=tmp_path).fit(X)
    _assert_same_fit(resumed, reference)


def test_unusable_checkpoint_without_fallback_is_one_clear_error(X, tmp_path):
    _make(checkpoint_dir=tmp_path, max_iter=EVERY).fit(X)
    path = _only_checkpoint(tmp_path)
    assert not previous_checkpoint(path).exists()
    path.write_bytes(b"\x80\x04 random bytes, not a checkpoint" * 10)
    with pytest.raises(CheckpointError) as info:
        _make(checkpoint_dir=tmp_path, max_iter=EVERY).fit(X)
    message = str(info.value)
    assert str(path) in message and "Delete the file" in message
    assert "weights_only" not in message  # torch's advice to unpickle anything is not passed on


def test_checkpoint_of_another_network_is_refused_with_the_file_name(X, tmp_path):
    other = tmp_path / "other"
    _make(checkpoint_dir=other, max_iter=EVERY, hidden_layer_sizes=(8,)).fit(X)
    _make(checkpoint_dir=tmp_path, max_iter=EVERY).fit(X)
    path = _only_checkpoint(tmp_path)
    shutil.copyfile(_only_checkpoint(other), path)  # same name, another network's state
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + " cannot be used: it does "
                       "not fit this estimator's network.*size mismatch"):
        _make(checkpoint_dir=tmp_path, max_iter=EVERY).fit(X)


# ----------------------------------------------------------------------------- directory
def test_checkpoint_dir_that_is_a_file_fails_before_training(X, tmp_path, monkeypatch):
    steps = _count_steps(monkeypatch)
    target = tmp_path / "a_file"
    target.write_text("")
    with pytest.raises(CheckpointError, match="checkpoint_dir=.*a_file.* is an existing file"):
        _make(checkpoint_dir=target).fit(X)
    with pytest.raises(CheckpointError, match="not a writable directory"):
        _make(checkpoint_dir=target / "below").fit(X)
    assert steps == []


def _fit_in_read_only_dir(X, steps):
    directory = tempfile.mkdtemp()
    os.chmod(directory, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP
             | stat.S_IROTH | stat.S_IXOTH)
    if os.geteuid() == 0:  # root ignores permissions: run as nobody
        os.setgid(65534)
        os.setuid(65534)
    original = BaseNeuralEigenClustering._train_step
    BaseNeuralEigenClustering._train_step = lambda self, run, X, objective: (
        steps.append(run.step), original(self, run, X, objective))[1]
    try:
        _make(checkpoint_dir=directory).fit(X)
    except CheckpointError as exc:
        return str(exc), len(steps), directory
    return None, len(steps), directory


def test_read_only_checkpoint_dir_fails_before_training(X):
    exit_code, report = run_in_child(_fit_in_read_only_dir, X, [])
    assert exit_code == 0 and report[0] == "ok", report
    message, n_steps, directory = report[1]
    shutil.rmtree(directory, ignore_errors=True)
    assert message is not None and n_steps == 0
    assert f"checkpoint_dir={directory!r} is not a writable directory" in message
    assert "Nothing was trained" in message


def _fit_on_a_full_disk(X, directory):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        _make(checkpoint_dir=directory).fit(X)
    except CheckpointError as exc:
        return str(exc), sorted(p.name for p in directory.iterdir())
    return None, []


def test_full_disk_is_one_clear_error_naming_the_file(X, tmp_path):
    exit_code, report = run_in_child(_fit_on_a_full_disk, X, tmp_path)
    assert exit_code == 0 and report[0] == "ok", report
    message, files = report[1]
    assert message is not None and message.startswith("could not write the checkpoint")
    assert str(tmp_path) in message and "free disk space" in message
    assert files == []  # no truncated checkpoint, no temporary file left behind


# ----------------------------------------------------------------------------- stale runs
def test_data_differing_outside_any_sample_is_not_resumed(X, tmp_path, monkeypatch):
    X2 = X.copy()
    X2[1:-1] += 1.0  # only the first and last rows agree (the old fingerprint read 16 rows)
    X2[np.linspace(0, len(X) - 1, 16).astype(int)] = X[np.linspace(0, len(X) - 1, 16)
                                                      .astype(int)]
    _make(checkpoint_dir=tmp_path).fit(X)
    steps = _count_steps(monkeypatch)
    refit = _make(checkpoint_dir=tmp_path).fit(X2)
    assert steps == list(range(MAX_ITER))  # trained, not handed the X model
    _assert_same_fit(refit, _make().fit(X2))
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_unseeded_fits_never_share_a_checkpoint(X, tmp_path, monkeypatch):
    steps = _count_steps(monkeypatch)
    for _ in range(2):
        with pytest.warns(CheckpointWarning, match="checkpoint_dir=.* is ignored.*integer "
                          "random_state"):
            _make(checkpoint_dir=tmp_path, random_state=None, max_iter=EVERY).fit(X)
    assert steps == list(range(EVERY)) * 2  # both trained
    assert list(tmp_path.iterdir()) == []


def test_data_checksum_covers_every_byte_and_every_container(X, tmp_path):
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    base = data_checksum(X32)
    assert base == data_checksum(X32.copy()) and base.startswith("150x4:")
    changed = X32.copy()
    changed[77, 2] = np.nextafter(changed[77, 2], np.float32(np.inf))  # one ulp, one value
    assert data_checksum(changed) != base
    assert data_checksum(np.asfortranarray(X32)) == base  # layout does not matter
    assert data_checksum(X32.astype(np.float64)) != base  # dtype does
    saved = as_feature_source(_saved(tmp_path / "a.npy", X32))
    assert data_checksum(saved) == data_checksum(as_feature_source(tmp_path / "a.npy"))
    assert data_checksum(saved) != data_checksum(
        as_feature_source(_saved(tmp_path / "b.npy", changed)))


def _saved(path, array):
    np.save(path, array)
    return path


def test_unreadable_checkpoint_is_not_called_damaged(tmp_path, monkeypatch):
    """A permission error read as "truncated or not a checkpoint file": advice to delete a
    valid file."""
    from spectralnet_seg.cluster import _checkpoints

    path = tmp_path / "run.pt"
    path.write_bytes(b"whatever")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_checkpoints.torch, "load", denied)
    monkeypatch.setattr(_checkpoints.zipfile, "ZipFile", denied)  # the first reader
    with pytest.raises(_checkpoints.CheckpointError, match="cannot be read .permission"):
        _checkpoints.load_checkpoint(path)


def test_partial_fit_says_it_writes_no_checkpoints(tmp_path):
    from spectralnet_seg.cluster import CheckpointWarning, NeuralEigenClustering

    X = np.random.default_rng(0).normal(size=(60, 3))
    est = NeuralEigenClustering(2, checkpoint_dir=tmp_path, random_state=0)
    with pytest.warns(CheckpointWarning, match="partial_fit writes no checkpoints"):
        est.partial_fit(X)
    assert not list(tmp_path.iterdir())
