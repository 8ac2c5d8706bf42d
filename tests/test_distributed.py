"""torch.distributed helpers: single-process no-ops and a real 2-process gloo group."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from spectralnet_seg import distributed as dist
from spectralnet_seg.cluster import NeuralEigenClustering, _neural_io
from spectralnet_seg.data import make_loader
from spectralnet_seg.kernels import make_kernel

# ---------------------------------------------------------------------------- one process


def test_single_process_answers(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not dist.is_distributed()
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (0, 1, 0)
    assert dist.is_main_process()
    assert dist.init_from_env() is False  # not under torchrun: nothing to do
    x = torch.tensor([1, 2, 3])
    mean = dist.all_reduce_mean(x)
    assert mean.dtype == torch.float32 and torch.equal(mean, x.float())
    total = dist.all_reduce_sum(x)
    assert torch.equal(total, x) and total is not x
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    dist.barrier()
    assert dist.rank_zero_only(lambda v: v + 1)(1) == 2
    module = torch.nn.Linear(2, 2)
    assert dist.wrap_ddp(module) is module and dist.unwrap_model(module) is module
    assert dist.local_device().type in ("cpu", "cuda")


def test_seed_for_rank_is_distinct_and_reproducible():
    seeds = [dist.seed_for_rank(7, rank=r) for r in range(512)]
    assert len(set(seeds)) == len(seeds)
    assert seeds == [dist.seed_for_rank(7, rank=r) for r in range(512)]
    assert all(0 <= s < 2**32 for s in seeds)
    np.random.RandomState(seeds[-1])  # valid for numpy (and torch.manual_seed)
    # Nearby random_states do not reuse each other's rank seeds.
    others = {dist.seed_for_rank(8, rank=r) for r in range(512)}
    assert not others & set(seeds)
    assert dist.seed_for_rank(np.random.RandomState(3), 1) == \
        dist.seed_for_rank(np.random.RandomState(3), 1)
    assert dist.seed_for_rank(7) == seeds[0]  # default rank: this process's (0)
    with pytest.raises(ValueError, match="non-negative"):
        dist.seed_for_rank(0, rank=-1)


def test_setup_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend='ucc' is not supported"):
        dist.init_from_env("ucc")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match=r"lacks \['MASTER_ADDR', 'MASTER_PORT'\]"):
        dist.init_from_env("gloo")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            dist.init_from_env("nccl")
    with pytest.raises(ValueError, match="world_size"):
        dist.run_local(_ranks_report, 0)


def test_find_free_port():
    port = dist.find_free_port()
    assert 0 < port < 65536


# ---------------------------------------------------------------------------- two processes
@dist.rank_zero_only
def _only_on_main(rank):
    return f"written by {rank}"


def _ranks_report():
    """Runs on each rank of a 2-process gloo group; returns what the parent checks."""
    rank = dist.get_rank()
    out = {"rank": rank, "world": dist.get_world_size(), "main": dist.is_main_process(),
           "distributed": dist.is_distributed(), "local_rank": dist.get_local_rank()}
    out["mean"] = dist.all_reduce_mean(torch.tensor([rank + 1.0, 10.0 * rank])).tolist()
    out["sum"] = dist.all_reduce_sum(torch.tensor([rank + 1])).tolist()
    out["broadcast"] = dist.broadcast_object({"from": rank, "payload": list(range(rank + 3))})
    out["rank_seed"] = dist.seed_for_rank(0)
    out["shared_seed"] = dist.shared_seed(None)  # random on each rank, then rank 0's
    out["side_effect"] = _only_on_main(rank)

    # Each rank draws its own rows of one shared permutation (random_state=None: the seed
    # comes from rank 0), so together they see every row once.
    data = np.arange(40, dtype=np.float32).reshape(20, 2)
    loader = make_loader(data, batch_size=3, drop_last=False, return_indices=True)
    out["rows"] = [int(i) for indices, _ in loader for i in indices]

    # DDP: gradients are averaged over ranks; each rank sees different data.
    torch.manual_seed(0)  # same initial weights everywhere
    model = torch.nn.Linear(3, 1)
    generator = torch.Generator().manual_seed(dist.seed_for_rank(0))
    x = torch.randn(8, 3, generator=generator)
    model(x).pow(2).mean().backward()
    out["local_grad"] = model.weight.grad.clone()
    model.zero_grad()
    ddp = dist.wrap_ddp(model)
    out["wrapped"] = ddp is not model and dist.unwrap_model(ddp) is model
    ddp(x).pow(2).mean().backward()
    out["ddp_grad"] = model.weight.grad.clone()
    dist.barrier()
    return out


def _fail_on_rank_one():
    if dist.get_rank() == 1:
        raise RuntimeError("rank one broke")
    return "ok"


@pytest.fixture(scope="module")
def two_rank_reports():
    return dist.run_local(_ranks_report, 2, backend="gloo")


def test_two_ranks_identify_themselves(two_rank_reports):
    r0, r1 = two_rank_reports
    assert (r0["rank"], r1["rank"]) == (0, 1) and r0["world"] == r1["world"] == 2
    assert r0["main"] and not r1["main"] and r0["distributed"] and r1["distributed"]
    assert (r0["local_rank"], r1["local_rank"]) == (0, 1)
    assert (r0["side_effect"], r1["side_effect"]) == ("written by 0", None)


def test_two_ranks_collectives(two_rank_reports):
    for report in two_rank_reports:
        assert report["mean"] == [1.5, 5.0]  # mean of [1, 0] and [2, 10]
        assert report["sum"] == [3]
        assert report["broadcast"] == {"from": 0, "payload": [0, 1, 2]}
    r0, r1 = two_rank_reports
    assert r0["rank_seed"] != r1["rank_seed"]
    assert r0["rank_seed"] == dist.seed_for_rank(0, rank=0)
    assert r1["rank_seed"] == dist.seed_for_rank(0, rank=1)
    assert r0["shared_seed"] == r1["shared_seed"]


def test_two_ranks_split_the_rows(two_rank_reports):
    rows0, rows1 = (r["rows"] for r in two_rank_reports)
    assert len(rows0) == len(rows1) == 10
    assert not set(rows0) & set(rows1)
    assert set(rows0) | set(rows1) == set(range(20))


def test_ddp_averages_gradients(two_rank_reports):
    r0, r1 = two_rank_reports
    assert r0["wrapped"] and r1["wrapped"]
    assert not torch.allclose(r0["local_grad"], r1["local_grad"])  # different data
    expected = (r0["local_grad"] + r1["local_grad"]) / 2
    for report in two_rank_reports:
        torch.testing.assert_close(report["ddp_grad"], expected)


def test_run_local_reports_a_failing_rank():
    with pytest.raises(Exception, match="rank one broke"):
        dist.run_local(_fail_on_rank_one, 2)


# ---------------------------------------------------------------------------- DDP training
# Same total batch: one process with 512 graph pairs per step, or two with 256 each.
_TOTAL_BATCH, _DIGITS_STEPS = 512, 200


class _RecordingNEC(NeuralEigenClustering):
    """Records a fingerprint of the random stream each rank draws its first pairs from."""

    def _train_step(self, run, X, objective):
        if run.step < 3:
            state = float(run.generator.get_state().double().sum())
            self.first_batches_ = getattr(self, "first_batches_", []) + [state]
        return super()._train_step(run, X, objective)


def _digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y


def _fit_digits(batch_size, checkpoint_dir=None):
    """Fit on digits (under run_local: on every rank); returns what the parent checks."""
    saved = []
    original = _neural_io.save_checkpoint
    _neural_io.save_checkpoint = lambda path, payload: (saved.append(int(payload["step"])),
                                                        original(path, payload))
    X, y = _digits()
    est = _RecordingNEC(10, kernel=make_kernel("knn", n_neighbors=10),
                        hidden_layer_sizes=(64,), batch_size=batch_size,
                        max_iter=_DIGITS_STEPS, n_iter_no_change=_DIGITS_STEPS,
                        learning_rate=3e-3, n_init=4, device="cpu",
                        random_state=0, checkpoint_dir=checkpoint_dir, checkpoint_every=50)
    try:
        est.fit(X)
        resumed_labels = None
        if checkpoint_dir is not None:
            dist.barrier()  # rank 0's last checkpoint is written
            # A rerun resumes from the finished checkpoint on every rank: no training left.
            resumed_labels = clone(est).fit(X).labels_
    finally:
        _neural_io.save_checkpoint = original
    return {"nmi": normalized_mutual_info_score(y, est.labels_), "labels": est.labels_,
            "eigenvalues": est.eigenvalues_, "loss_curve": est.loss_curve_,
            "weights": [p.detach().clone() for p in est.network_.parameters()],
            "first_batches": est.first_batches_, "checkpoints_written": saved,
            "resumed_labels": resumed_labels,
            "world": dist.get_world_size()}


@pytest.mark.slow
def test_two_rank_ddp_training_matches_one_rank_on_digits(tmp_path):
    single = _fit_digits(_TOTAL_BATCH)
    r0, r1 = dist.run_local(_fit_digits, 2, args=(_TOTAL_BATCH // 2, str(tmp_path)))
    print(f"\ndigits NMI: 1 rank x {_TOTAL_BATCH} rows {single['nmi']:.4f}; 2 ranks x "
          f"{_TOTAL_BATCH // 2} rows {r0['nmi']:.4f}")
    assert single["world"] == 1 and r0["world"] == r1["world"] == 2
    # Each rank draws its own minibatches...
    assert r0["first_batches"] != r1["first_batches"]
    # ...yet gradients (DDP) and statistics (all-reduce) keep the ranks identical.
    for a, b in zip(r0["weights"], r1["weights"], strict=True):
        torch.testing.assert_close(a, b)
    np.testing.assert_array_equal(r0["eigenvalues"], r1["eigenvalues"])
    assert r0["loss_curve"] == r1["loss_curve"]
    np.testing.assert_array_equal(r0["labels"], r1["labels"])
    # Only rank 0 writes checkpoints.
    assert r0["checkpoints_written"] == [50, 100, 150, 200] and r1["checkpoints_written"] == []
    assert len(list(tmp_path.glob("*.pt"))) == 1
    for report in (r0, r1):
        np.testing.assert_array_equal(report["resumed_labels"], r0["labels"])
    assert abs(r0["nmi"] - single["nmi"]) <= 0.02


def test_fit_joins_the_process_group_of_a_torchrun_launch(monkeypatch):
    """What torchrun sets (here for a world of one): fit initialises the group itself, with
    gloo for a device='cpu' fit ("auto" picks NCCL wherever CUDA exists, and NCCL refuses
    CPU tensors), and leaves the CUDA generators alone (every fit used to reseed them)."""
    import torch.distributed as torch_dist

    backends = []
    init_from_env = dist.init_from_env
    monkeypatch.setattr(dist, "init_from_env", lambda backend="auto", **kwargs: (
        backends.append(backend), init_from_env(backend, **kwargs))[1])
    cuda_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(dist.find_free_port())}.items():
        monkeypatch.setenv(name, value)
    X, _ = _digits()
    try:
        est = NeuralEigenClustering(4, kernel=make_kernel("cosine"), hidden_layer_sizes=(8,),
                                    batch_size=64, max_iter=3, n_init=1, device="cpu",
                                    random_state=0).fit(X[:200])
        assert dist.is_distributed() and dist.get_world_size() == 1
        assert backends == ["gloo"] and torch_dist.get_backend() == "gloo"
        assert est.n_iter_ == 3
    finally:
        dist.cleanup()
    assert not dist.is_distributed() and cuda_seeds == []
    with monkeypatch.context() as cuda_machine:  # what "auto" would have chosen there
        cuda_machine.setattr(torch.cuda, "is_available", lambda: True)
        cuda_machine.setattr(torch_dist, "is_nccl_available", lambda: True)
        assert dist._resolve_backend("auto") == "nccl"


def test_gpu_choices_are_checked_before_a_collective_could_fail(monkeypatch):
    """Simulated CUDA machine: a GPU index beyond its GPUs, and more NCCL processes on a node
    than the GPUs they all see (NCCL's "Duplicate GPU detected"), are refused up front."""
    from spectralnet_seg._utils import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"has 1 CUDA device\(s\) \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:7")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name, value in {"RANK": "2", "LOCAL_RANK": "2", "WORLD_SIZE": "3",
                        "LOCAL_WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="needs one GPU per process, but 3 processes"):
        dist.init_from_env("nccl")


# ---------------------------------------------------------------------------- misuse, streams
def _snapshot_on_rank_zero(snapshot, n_iter):
    if dist.is_main_process():  # side work on rank 0 only, as the docs suggest
        snapshot()


def _streams_and_misuse(checkpoint_dir):
    """Runs on each rank: a split stream, unequal chunks and shards, a rank-0 callback, and
    a rerun of a finished discrete fit from its checkpoint."""
    from spectralnet_seg.cluster import DiscreteNeuralEigenClustering

    X, _ = _digits()
    X = X[:400]
    small = dict(hidden_layer_sizes=(16,), device="cpu", random_state=0)
    # The documented stream: make_loader gives each rank its own rows of every chunk.
    est = NeuralEigenClustering(10, **small)
    for _, chunk in make_loader(X, batch_size=100, random_state=0, return_indices=True):
        est.partial_fit(chunk)
    out = {"predict": est.predict(X), "transform": est.transform(X),
           "fourier_scale": est.fourier_scale_}
    rank = dist.get_rank()
    try:  # 201 rows on rank 0, 199 on rank 1: the ranks' step counts would differ
        NeuralEigenClustering(10, **small).partial_fit(X[: 201 - 2 * rank])
    except ValueError as err:
        out["uneven"] = str(err)
    try:  # each rank its own shard: two models
        NeuralEigenClustering(10, max_iter=5, **small).fit(X[rank * 200:(rank + 1) * 200])
    except ValueError as err:
        out["shards"] = str(err)
    # A snapshot on rank 0 only: the discrete one fine-tunes, which waited for rank 1.
    DiscreteNeuralEigenClustering(10, max_iter=20, fine_tune_iter=10, n_iter_no_change=20,
                                  callback=_snapshot_on_rank_zero, **small).fit(X)
    out["callback_done"] = True
    # A rerun resumes the finished checkpoint and fine-tunes from every rank's own stream
    # (reseeded streams gave other draws: 7 of 400 labels differed on 2 ranks).
    discrete = DiscreteNeuralEigenClustering(10, max_iter=20, fine_tune_iter=10,
                                             n_iter_no_change=20, checkpoint_dir=checkpoint_dir,
                                             checkpoint_every=10, **small)
    first = discrete.fit(X).labels_
    dist.barrier()  # rank 0's last checkpoint is written
    out["rerun_equal"] = bool(np.array_equal(clone(discrete).fit(X).labels_, first))
    return out


@pytest.mark.slow
def test_two_rank_streams_agree_and_misuse_is_refused(tmp_path):
    r0, r1 = dist.run_local(_streams_and_misuse, 2, args=(str(tmp_path),), backend="gloo")
    # The ranks' k-means centres, output maps and settings came from their own chunks:
    # their predictions disagreed on 362 of 400 rows.
    np.testing.assert_array_equal(r0["predict"], r1["predict"])
    np.testing.assert_array_equal(r0["transform"], r1["transform"])
    assert r0["fourier_scale"] == r1["fourier_scale"]
    for report in (r0, r1):
        assert "chunks of [201, 199] rows" in report["uneven"]  # was a hang
        assert "fit got different data on the ranks" in report["shards"]
        assert report["callback_done"]  # was a hang
        assert report["rerun_equal"]
