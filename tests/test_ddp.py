"""Data-parallel trials (study/parallel.py, trainables/distributed.py): W workers under a real Ray
Train `TorchTrainer` (gloo on the CPU, loopback only) compute what one process computes, and a
study of such trials survives a worker SIGKILLed mid-run with its record whole."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from trainables.batches import Batches, epoch_batches
from trainables.config import TrialConfig
from trainables.distributed import Workers
from trainables.losses import create_loss
from trainables.splits import load_splits
from trainables.train import build_state, train_step, wrap

from helpers import assert_whole_study, study_cmd, study_env, trial_runs

CPU = torch.device("cpu")
# Mollification on, a BN model at a small size: what a trial steps on, in a second.
CFG = TrialConfig(dataset="synthetic", train_size=64, image_size=16, model="smallcnn", batch_size=16, lr=0.2,
                  augment="fcr", mollify=True, corruption_source="none", seed=3)


# --- the global batch, split over workers ----------------------------------------------------------

def test_the_workers_parts_of_each_step_make_up_the_one_process_batch():
    train, _, _ = load_splits(CFG, CPU)
    steps = len(train) // CFG.batch_size
    one = list(epoch_batches(CFG, train, 1, steps, CPU))
    parts = [list(epoch_batches(CFG, train, 1, steps, CPU, Workers(r, 2))) for r in range(2)]
    assert len(one) == steps and all(len(p) == steps for p in parts)
    for step, (images, labels) in enumerate(one):
        assert torch.equal(torch.cat([parts[0][step][0], parts[1][step][0]]), images)
        assert torch.equal(torch.cat([parts[0][step][1], parts[1][step][1]]), labels)
        assert parts[0][step][0].shape[0] == CFG.batch_size // 2
    other_epoch = next(iter(epoch_batches(CFG, train, 2, steps, CPU)))[1]
    assert not torch.equal(other_epoch, one[0][1])  # the order is the epoch's, not fixed


# --- one SGD step: 2 workers x B/2 images = 1 worker x B images ------------------------------------

# The step as a trial takes it, and two ways of getting it wrong that the comparison must catch.
VARIANTS = ("ddp+syncbn", "no-syncbn", "no-averaging")


def one_batch(cfg: TrialConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """B mollified, augmented images and their soft labels, drawn once by the trial's own Batches."""
    train, _, _ = load_splits(cfg, CPU)
    generator = torch.Generator().manual_seed(cfg.seed)
    index = torch.arange(cfg.batch_size)
    return Batches.for_trial(cfg).prepare(train.images[index], train.labels[index], train, generator)


def after_step(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and BN buffer (running mean, variance, batches seen)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def step_variant(cfg: TrialConfig, variant: str, workers: Workers, x, y) -> dict[str, torch.Tensor]:
    if variant == "no-syncbn":  # per-worker batch norm statistics, gradients averaged
        state = build_state(cfg, 10, 4, CPU)
        net = torch.nn.parallel.DistributedDataParallel(state.model)
    else:
        state = build_state(cfg, 10, 4, CPU, workers)
        net = wrap(cfg, state.model, workers) if variant == "ddp+syncbn" else state.model  # no-averaging: each its own
    state.model.train()
    train_step(cfg, state, net, x, y, create_loss(cfg.loss))
    return after_step(state.model)


def equivalence_worker(loop: dict) -> None:
    import ray.train

    workers = Workers.current()
    cfg = TrialConfig.from_dict(loop["config"])
    x, y = workers.shard(loop["x"]), workers.shard(loop["y"])  # rows [r*B/2, (r+1)*B/2)
    torch.save({v: step_variant(cfg, v, workers, x, y) for v in VARIANTS}, Path(loop["out"]) / f"rank{workers.rank}.pt")
    ray.train.report({"rank": workers.rank})


@pytest.fixture(scope="module")
def two_workers_one_step(tmp_path_factory):
    """Each variant's model after one step on each of 2 gloo workers under a real TorchTrainer, and
    the one-process model after the same step on the whole batch."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    out = tmp_path_factory.mktemp("ddp-step")
    x, y = one_batch(CFG)
    # ray.init installs its own SIGTERM and SIGINT handlers in this (pytest's) process, and
    # shutdown leaves them: put pytest's back, as later tests check what the handlers are.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR",
             # the workers import this module (their loop) from the tests folder
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                                       os.environ.get("PYTHONPATH", "")])}})
    try:
        TorchTrainer(equivalence_worker, train_loop_config={"config": CFG.to_dict(), "x": x, "y": y, "out": str(out)},
                     scaling_config=ray.train.ScalingConfig(num_workers=2),
                     run_config=ray.train.RunConfig(storage_path=str(out / "ray"), name="step")).fit()
    finally:
        ray.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    state = build_state(CFG, 10, 4, CPU)
    train_step(CFG, state, state.model, x, y, create_loss(CFG.loss))
    return [torch.load(out / f"rank{r}.pt") for r in range(2)], after_step(state.model)


@pytest.mark.slow
def test_two_workers_step_as_one_process_on_the_whole_batch(two_workers_one_step):
    ranks, one = two_workers_one_step
    for rank in ranks:
        got = rank["ddp+syncbn"]
        assert got.keys() == one.keys()
        # float32, summed in another order (two halves, then an all-reduce) than one pass over B:
        # differences of a few ulps, ~1e-7 relative; 1e-5 leaves margin and still sits orders of
        # magnitude below what either mistake below makes.
        for k in one:
            torch.testing.assert_close(got[k], one[k], rtol=1e-5, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_without_syncbn_or_without_gradient_averaging_the_step_differs(two_workers_one_step, variant):
    ranks, one = two_workers_one_step
    got = ranks[0][variant]
    worst = max((got[k].float() - one[k].float()).abs().max().item() for k in one)
    assert worst > 1e-3, f"{variant} matched the one-process step (largest difference {worst:g})"


# --- a study of data-parallel trials, one worker SIGKILLed mid-run ---------------------------------

NAME = "ddp"
EPOCHS = 6
SPEC = {
    # about 2 s an epoch here: the kill lands mid-run, after the first checkpoint
    "trial": {"dataset": "synthetic", "train_size": 2048, "image_size": 16, "model": "smallcnn", "epochs": EPOCHS,
              "batch_size": 64, "lr": 0.05, "limit_eval_images": 64, "corruption_source": "none",
              "valid_per_class": 4, "valid_corrupt_images": 8},
    "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]], "num_samples": 1,
               "space": {"beta": {"type": "float", "low": 1, "high": 9}}},
    "resources": {"workers": 2, "cpus_per_worker": 1}, "max_concurrent": 1, "max_failures": 2,
}


def descendants(root: int) -> list[int]:
    """The processes under `root` (the driver: its Ray cluster and workers), from /proc."""
    parent = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parent[int(entry.name)] = int(fields[1])
        except (ValueError, OSError, IndexError):
            continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parent.items() if pp == pid]
        found += children
        frontier += children
    return found


def train_workers(driver: int) -> list[int]:
    """The driver's Ray Train worker processes (Ray titles them after their actor class)."""
    out = []
    for pid in descendants(driver):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "RayTrainWorker" in title:
            out.append(pid)
    return out


def epochs_logged(uri: str) -> list[int]:
    client, _, runs = trial_runs(uri, NAME)
    return [m.step for r in runs for m in client.get_metric_history(r.info.run_id, "train/loss")]


def kept_epoch(folder: Path) -> int:
    """The newest epoch any Train run of the study kept a checkpoint of (0: none yet)."""
    return max((torch.load(c, weights_only=True)["epoch"] for c in
                folder.glob("trial_*/train_*/checkpoint_*/checkpoint.pt")), default=0)


@pytest.mark.slow
def test_a_data_parallel_trial_survives_a_killed_worker_and_then_a_killed_driver(tmp_path):
    """One study, two faults (one Ray start, to keep the suite short):
    1. a Train worker SIGKILLed mid-run after epoch 1 is checkpointed: Ray Train restarts the whole
       group, which goes on from the newest kept checkpoint (not from scratch, nor from Ray Train's
       lagging view of its checkpoints) into the trial's own run;
    2. later, the driver with its Ray cluster and both workers SIGKILLed (the process group: a lost
       machine, `kill -9` of a job): `study resume` starts a new Train run that continues from the
       dead run's kept checkpoint.
    At the end: one run, FINISHED, every epoch logged once, Optuna agrees."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = tmp_path / "ddp.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    env = {**study_env(), "MOLLIFY_NO_ESTIMATE": "1"}
    driver = subprocess.Popen(study_cmd(tmp_path, "launch", str(spec), "--name", NAME, "--tracking-uri", uri,
                                        "--storage", storage),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    trial_folder = tmp_path / "runs" / NAME / "tune"
    try:
        # epoch 1 logged by rank 0 and its checkpoint kept by Ray Train: then kill a worker, mid-epoch 2
        assert wait_until(lambda: kept_epoch(trial_folder) >= 1 and epochs_logged(uri), driver, 400), \
            "epoch 1 never logged"
        workers = train_workers(driver.pid)
        assert len(workers) == 2, workers
        assert epochs_logged(uri) != list(range(1, EPOCHS + 1)), "the trial ended before the kill"
        kept = kept_epoch(trial_folder)
        os.kill(max(workers), signal.SIGKILL)
        # Ray Train restarts the whole group: two new workers, none of the old ones
        restarted = wait_until(lambda: new_group(driver.pid, workers), driver, 300)
        assert restarted, "the worker group was not restarted after the kill"
        # the restarted group checkpoints epochs of its own: then the whole driver goes
        assert wait_until(lambda: kept_epoch(trial_folder) >= kept + 2, driver, 300), "no epoch after the restart"
        assert epochs_logged(uri) != list(range(1, EPOCHS + 1)), "the trial ended before the driver was killed"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
    # the restarted group went on from the newest checkpoint kept (the one before the kill, or one
    # rank 0 was writing as it happened)
    log = (tmp_path / "runs" / NAME / "study.log").read_text()
    after = sorted({float(e) for pid in restarted for e in re.findall(
        rf"pid={pid}\)\S* Reporting training result \d+: TrainingReport\(checkpoint=.*?metrics=\{{'epoch': ([\d.]+)", log)})
    assert after and after[0] - 1 in (kept, kept + 1), (kept, after)
    assert after == [float(e) for e in range(int(after[0]), int(after[-1]) + 1)], (kept, after)
    logged = sorted(epochs_logged(uri))
    resumed = subprocess.run(study_cmd(tmp_path, "resume", NAME), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert_whole_study(uri, storage, NAME, trials=1, epochs=EPOCHS)  # one run, FINISHED, each epoch once, Optuna agrees
    client, _, runs = trial_runs(uri, NAME)
    history = sorted(client.get_metric_history(runs[0].info.run_id, "train/loss"), key=lambda m: m.step)
    assert [m.step for m in history][:len(logged)] == logged  # what was logged before the kill stayed


def new_group(driver: int, old: list[int]) -> list[int] | None:
    """The driver's two Train workers once neither is one of `old`."""
    now = train_workers(driver)
    return now if len(now) == 2 and set(now).isdisjoint(old) else None


def wait_until(check, driver: subprocess.Popen, timeout: float):
    """`check()`'s first true value while the driver runs, else None."""
    deadline = time.monotonic() + timeout
    while driver.poll() is None and time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    return None


# --- the spec ----------------------------------------------------------------------------------------

GRID = {"trial": {"dataset": "synthetic", "epochs": 1}, "search": {"algorithm": "grid", "grid": [{"beta": [2]}]}}


@pytest.mark.parametrize("resources, says", [
    ({"workers": 2, "cpus": 1}, "resources.workers and resources.cpus exclude each other"),
    ({"workers": 2, "gpus": 1}, "resources.workers and resources.gpus exclude each other"),
    ({"cpus_per_worker": 2}, "resources.cpus_per_worker needs resources.workers"),
    ({"workers": 0}, "resources.workers must be an integer >= 1"),
    ({"workers": 1.5}, "resources.workers must be an integer >= 1"),
    ({"workers": True}, "resources.workers must be an integer >= 1"),
    ({"workers": 2, "cpus_per_worker": 0}, "resources.cpus_per_worker must be > 0"),
    ({"workers": 2, "gpus_per_worker": 0.5}, "resources.gpus_per_worker must be 0 or a whole number"),
    ({"workers": 2, "gpus_per_worker": "one"}, "resources.gpus_per_worker must be a number"),
    ({"workers": 2, "nodes": 1}, "valid: cpus, gpus, workers, cpus_per_worker, gpus_per_worker"),
])
def test_bad_worker_resources_are_refused_in_one_line(resources, says):
    from study.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as err:
        parse_spec({**GRID, "resources": resources})
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_data_parallel_trial_costs_all_its_workers_and_its_spec_reads_back():
    from study.parallel import trials_that_fit
    from study.spec import parse_spec

    spec = parse_spec({**GRID, "resources": {"workers": 2, "cpus_per_worker": 1.5, "gpus_per_worker": 1}})
    assert (spec.cpus, spec.gpus) == (3.0, 2.0)
    assert parse_spec(spec.effective()).resources == spec.resources
    assert trials_that_fit(spec.resources, {"CPU": 16, "GPU": 4}) == 2
    assert trials_that_fit(spec.resources, {"CPU": 2, "GPU": 0}) == 1  # never 0: check_resources refuses that
    one = parse_spec({**GRID, "resources": {"workers": 1, "gpus_per_worker": 0.5}})
    assert (one.cpus, one.gpus) == (1.0, 0.5)


@pytest.mark.slow
def test_a_data_parallel_trial_that_fails_ends_its_run_failed_with_the_workers_cause(tmp_path):
    """The workers leave the run open when they fail (Ray Train may restart the group); once it
    gives up, the run ends FAILED saying what rank 0 raised, here a diverged loss."""
    spec = tmp_path / "divg.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "divg", "trial": {**SPEC["trial"], "lr": 1e30, "epochs": 2, "train_size": 256},
        "search": {"algorithm": "grid", "grid": [{"beta": [2]}]},
        "resources": {"workers": 2, "cpus_per_worker": 1}, "max_failures": 0}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(study_cmd(tmp_path, "launch", str(spec), "--tracking-uri", uri, "--storage",
                                    f"sqlite:///{tmp_path / 'optuna.db'}", "--no-figures"),
                          env={**study_env(), "MOLLIFY_NO_ESTIMATE": "1"}, capture_output=True, text=True, timeout=400)
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]  # 1: some trials failed
    _, _, runs = trial_runs(uri, "divg")
    [run] = runs
    assert run.info.status == "FAILED"
    assert run.data.tags["mollify.status"].startswith("failed: TrialDivergedError: the training loss became nan")


def test_batch_norm_swapped_back_keeps_the_network_it_was():
    """A data-parallel trial's network is logged with plain BatchNorm2d (`swap_batch_norm`): the same
    parameters, buffers and outputs as the GlobalBatchNorm network it trained as."""
    from trainables.distributed import GlobalBatchNorm, global_batch_norm, swap_batch_norm
    from trainables.models import create_model

    torch.manual_seed(0)
    model = global_batch_norm(create_model("smallcnn", 10))
    model.train()(torch.randn(8, 3, 16, 16))  # one pass: running statistics away from their start
    model.eval()
    x = torch.randn(4, 3, 16, 16)
    before, state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    assert any(isinstance(m, GlobalBatchNorm) for m in model.modules())
    plain = swap_batch_norm(model, torch.nn.BatchNorm2d)
    assert not any(isinstance(m, GlobalBatchNorm) for m in plain.modules())
    assert any(type(m) is torch.nn.BatchNorm2d for m in plain.modules())
    assert plain.state_dict().keys() == state.keys()
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(plain(x), before)
