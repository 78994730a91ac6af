"""Issue 17: a study as a Slurm job (`python -m study slurm`), on a real Slurm.

The quick tests write the job script without Slurm and check what the command refuses. The slow
ones run Debian's slurm-wlm 22.05 here: `munged` with a key of its own, a `slurmctld` and two
`slurmd`s (nodes n1 and n2 of one machine, each with its own port and spool: a real two-node
allocation, though both nodes are this host and reach each other on 127.0.0.1), all inside a
network namespace whose only interface is loopback, each started and stopped by its process
group. Through `study slurm` they run: a search on two nodes (Ray's head and the driver on n1, a
Ray worker on n2 by srun, the SQLite tracking store served by an MLflow server on the head node),
and a search requeued mid-study with `scontrol requeue`, whose job resumes it. What cannot run
here: nodes on different machines (their addresses, a shared filesystem), GPUs, a real preemption
policy and the time-limit signal (docs/cluster.md says what was run how).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.__main__ import main
from study.slurm import JOB_FILE, SCRIPT_FILE
from helpers import REPO, Namespace, assert_whole_study, stop_group, trial_runs, wait_for

BASH = shutil.which("bash") or "/bin/bash"  # found before a test empties PATH
SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "srun")
# A tiny search: synthetic data, one CPU a trial, no corruption grid.
TRIAL = {"dataset": "synthetic", "train_size": 512, "model": "smallcnn", "epochs": 1, "batch_size": 64, "lr": 0.05,
         "limit_eval_images": 64, "corruption_source": "none", "valid_per_class": 8, "valid_corrupt_images": 16}


def spec(trials: int, epochs: int, concurrent: int) -> dict:
    return {"trial": {**TRIAL, "epochs": epochs},
            "search": {"algorithm": "tpe", "objectives": [["valid/error", "min"]], "num_samples": trials,
                       "space": {"beta": {"type": "float", "low": 1, "high": 9}, "roles": ["xn", "xb"]}},
            "resources": {"cpus": 1}, "max_concurrent": concurrent, "max_failures": 1}


def slurm_args(tmp: Path, name: str, *extra: str, spec: str = "s") -> list[str]:
    return ["--runs-dir", str(tmp / "runs"), "slurm", str(tmp / f"{spec}.yaml"), "--name", name,
            "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--storage", f"sqlite:///{tmp / 'optuna.db'}", *extra]


# --- the script, without Slurm ---------------------------------------------------------------------

@pytest.fixture
def spec_file(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec(2, 1, 1)))
    return tmp_path


def test_dry_run_writes_the_script_and_submits_nothing(spec_file, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(spec_file))  # no sbatch: a dry run needs none
    code = main(slurm_args(spec_file, "s", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                           "--time", "02:00:00", "--account", "lab", "--sbatch-arg=--qos=long", "--set", "lr=0.1",
                           "--dry-run"))
    out = capsys.readouterr().out
    folder = spec_file / "runs" / "s"
    script = (folder / SCRIPT_FILE).read_text()
    assert code == 0 and script in out and "nothing submitted" in out
    assert sorted(p.name for p in folder.iterdir()) == [SCRIPT_FILE]  # no job file: nothing submitted
    for line in ("--nodes=2", "--gpus-per-node=4", "--partition=gpu", "--time=02:00:00", "--account=lab", "--qos=long",
                 "--requeue", "--signal=B:TERM@120", "--open-mode=append", f"--output={folder}/slurm-%j.out",
                 f"--error={folder}/slurm-%j.err"):
        assert re.search(rf"^#SBATCH .*{re.escape(line)}", script, re.M), line
    assert f"LAUNCH=({spec_file / 's.yaml'} --name s --tracking-uri sqlite:///{spec_file / 'mlflow.db'}" in script
    assert "--set lr=0.1" in script and "--address" not in script.split("LAUNCH=(")[1].split(")")[0]
    assert "RESUME=()" in script  # the figures are made when the study ends, launched or resumed
    assert "SERVE_MLFLOW=1" in script  # two nodes, a SQLite store: served from the head node
    assert "RAY_AUTH_TOKEN=" not in script.split("# --- end of what")[0]  # the token is made in the job
    assert subprocess.run([BASH, "-n", str(folder / SCRIPT_FILE)]).returncode == 0


def test_one_node_keeps_the_sqlite_store_and_a_server_is_never_served(spec_file, capsys):
    main(slurm_args(spec_file, "s", "--nodes", "1", "--dry-run"))
    assert "SERVE_MLFLOW=0" in (spec_file / "runs" / "s" / SCRIPT_FILE).read_text()
    code = main([*slurm_args(spec_file, "t", "--nodes", "2", "--dry-run"), "--tracking-uri", "http://mlflow.lab:5000"])
    assert code == 0 and "SERVE_MLFLOW=0" in (spec_file / "runs" / "t" / SCRIPT_FILE).read_text()
    code = main([*slurm_args(spec_file, "u", "--nodes", "1", "--serve-mlflow", "yes", "--dry-run"),
                 "--tracking-uri", "http://mlflow.lab:5000"])
    assert code == 2 and "serves a SQLite store" in capsys.readouterr().err


def test_without_sbatch_one_line_exit_3_and_nothing_left(spec_file, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(spec_file))
    assert main(slurm_args(spec_file, "s", "--nodes", "1")) == 3
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "no `sbatch` on this machine" in line
    assert not (spec_file / "runs" / "s").exists()


def test_refused_before_submitting(spec_file, capsys):
    """Bad input is refused in one line (2) before sbatch is asked: a bad name, a spec that does not
    parse, too few nodes, a study that exists or was submitted already."""
    for args, words in ((slurm_args(spec_file, "../x", "--nodes", "1"), "study name"),
                        ([*slurm_args(spec_file, "s", "--nodes", "1"), "--set", "no_such_key=1"], "no_such_key"),
                        (slurm_args(spec_file, "s", "--nodes", "0"), "--nodes 0")):
        assert main(args) == 2, args
        [line] = capsys.readouterr().err.strip().splitlines()
        assert words in line, line
    folder = spec_file / "runs" / "s"
    folder.mkdir(parents=True)
    (folder / JOB_FILE).write_text(json.dumps({"job_id": "41"}))
    assert main(slurm_args(spec_file, "s", "--nodes", "1")) == 2
    assert "submitted already as Slurm job 41" in capsys.readouterr().err
    (folder / "study.json").write_text("{}")
    assert main(slurm_args(spec_file, "s", "--nodes", "1")) == 2
    assert "`python -m study resume s` continues it" in capsys.readouterr().err


def test_status_of_a_submitted_study_says_so_where_slurm_cannot_be_asked(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "runs" / "p"
    folder.mkdir(parents=True)
    (folder / JOB_FILE).write_text(json.dumps({"job_id": "7"}))
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol, no sacct
    assert main(["--runs-dir", str(tmp_path / "runs"), "status", "p"]) == 0
    out = capsys.readouterr().out
    assert "p: submitted" in out and "Slurm job 7:" in out and "no `scontrol` on this machine" in out
    assert main(["--runs-dir", str(tmp_path / "runs"), "status", "p", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "submitted" and data["slurm"]["job_id"] == "7" and data["slurm"]["state"] == "unknown"


# --- a real Slurm ------------------------------------------------------------------------------------

SLURM_CONF = """\
ClusterName=mollify-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={work}/munge.sock
StateSaveLocation={work}/state
SlurmdSpoolDir={work}/spool/%n
SlurmctldPidFile={work}/slurmctld.pid
SlurmdPidFile={work}/slurmd-%n.pid
SlurmctldLogFile={work}/logs/slurmctld.log
SlurmdLogFile={work}/logs/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
PlugStackConfig=/dev/null
KillWait=10
MinJobAge=600
NodeName=n1 NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={memory} Port=16818 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={memory} Port=16819 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def real_memory_mb() -> int:
    kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return kib // 1024 - 1024  # what slurmd finds, less a margin (a node reporting less is drained)


class Slurm:
    """munged, slurmctld and two slurmds of one machine, in a loopback-only network namespace."""

    def __init__(self, work: Path) -> None:
        self.work = work
        for sub in ("state", "spool", "logs", "home"):
            (work / sub).mkdir()
        (work / "slurm.conf").write_text(SLURM_CONF.format(work=work, host=os.uname().nodename,
                                                           cpus=os.cpu_count(), memory=real_memory_mb()))
        self.env = {**os.environ, "SLURM_CONF": str(work / "slurm.conf"), "PYTHONPATH": str(REPO),
                    "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "MOLLIFY_NO_ESTIMATE": "1",
                    "HOME": str(work / "home")}
        for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "SLURM_JOB_ID"):
            self.env.pop(key, None)
        self.munged: subprocess.Popen | None = None
        self.ns: Namespace | None = None

    def start(self) -> None:
        key = self.work / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        with open(self.work / "logs" / "munged.out", "w") as log:  # a file socket: no network needed
            self.munged = subprocess.Popen(
                ["munged", "-F", "--force", f"--key-file={key}", f"--socket={self.work / 'munge.sock'}",
                 f"--log-file={self.work / 'logs' / 'munged.log'}", f"--pid-file={self.work / 'munged.pid'}",
                 f"--seed-file={self.work / 'munged.seed'}"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for(lambda: (self.work / "munge.sock").exists() or self.munged.poll() is not None, 20, "munged")
        self.ns = Namespace(self.env, self.work / "logs")
        # Slurm resolves even "127.0.0.1" with getaddrinfo(AI_ADDRCONFIG), which finds nothing on a
        # host whose only IPv4 address is a loopback one: give lo a second address (still the
        # loopback device, no route anywhere else).
        added = self.ns.run(["ip", "addr", "add", "10.254.254.1/32", "dev", "lo"])
        assert added.returncode == 0, added.stderr
        conf = str(self.work / "slurm.conf")
        self.ns.start("slurmctld", ["slurmctld", "-D", "-i", "-f", conf])
        wait_for(lambda: self.ns.run(["scontrol", "ping"]).stdout.count("UP") > 0
                 or self.ns.groups["slurmctld"].poll() is not None, 30, "slurmctld")
        for node in ("n1", "n2"):
            self.ns.start(f"slurmd-{node}", ["slurmd", "-D", "-N", node, "-f", conf])
        wait_for(lambda: self.ns.run(["sinfo", "-h", "-o", "%T %D"]).stdout.split() == ["idle", "2"], 60,
                 "two idle nodes", interval=1)

    def close(self) -> None:
        try:
            if self.ns is not None:
                self.ns.close()
        finally:
            if self.munged is not None:
                stop_group(self.munged.pid, grace=5)

    def study(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.ns.run([sys.executable, "-m", "study", *args], timeout=timeout, cwd=self.work)

    def job(self, job_id: str) -> dict[str, str]:
        out = self.ns.run(["scontrol", "show", "job", "-o", job_id]).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def wait_job(self, job_id: str, timeout: float, ended=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                            "NODE_FAIL", "OUT_OF_MEMORY")) -> dict[str, str]:
        return wait_for(lambda: (job := self.job(job_id)).get("JobState") in ended and job, timeout,
                        f"Slurm job {job_id} to end", interval=1)

    def logs(self, folder: Path, job_id: str) -> str:
        return "".join(f"--- {p.name}\n{p.read_text()[-4000:]}\n" for p in
                       (folder / f"slurm-{job_id}.out", folder / f"slurm-{job_id}.err") if p.exists())


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [p for p in (*SLURM_PROGRAMS, "unshare", "nsenter", "ip") if shutil.which(p) is None]
    if os.geteuid() != 0:
        pytest.skip("needs root: slurmd runs jobs as their user and Slurm's daemons as SlurmUser=root")
    if missing:
        pytest.skip(f"needs Slurm and munge ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def submitted(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"as Slurm job (\d+)", done.stdout).group(1)


def leftovers(job_id: str, store: Path) -> list[str]:
    """Processes of the job's Ray clusters (by their temp folders) or MLflow server (by its store)
    still running, and the temp folders."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    running = [line for line in ps.splitlines() if f"ray-{job_id}-" in line or f"sqlite:///{store}" in line]
    return running + [str(p) for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"ray-{job_id}-*")]


@pytest.mark.slow
def test_a_search_on_two_nodes_with_the_sqlite_store_served_from_the_head(slurm, tmp_path):
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(spec(2, 1, 2)))
    done = slurm.study(*slurm_args(tmp_path, "two", "--nodes", "2", "--cpus-per-node", "1", "--partition", "debug",
                                   "--no-figures", spec="two"))
    job_id = submitted(done)
    folder = tmp_path / "runs" / "two"
    assert f"squeue -j {job_id}" in done.stdout and f"slurm-{job_id}.out" in done.stdout
    assert json.loads((folder / JOB_FILE).read_text())["job_id"] == job_id
    job = slurm.wait_job(job_id, 300)
    assert job["JobState"] == "COMPLETED", slurm.logs(folder, job_id)
    _, parents, runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "two")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), slurm.logs(folder, job_id)
    # One CPU a node and a trial: the two trials ran at once only because both nodes joined.
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    assert second.info.start_time < first.info.end_time, "the trials did not run at the same time"
    # The trials logged through the job's MLflow server on the head node; it was stopped after.
    served = (folder / "mlflow-server.log").read_text()
    assert "Uvicorn running on http://127.0.0.1:" in served
    assert "MLflow server http://127.0.0.1:" in (folder / f"slurm-{job_id}.out").read_text()
    assert not leftovers(job_id, tmp_path / "mlflow.db")
    status = slurm.study("--runs-dir", str(tmp_path / "runs"), "status", "two", "--json")
    data = json.loads(status.stdout)
    assert data["state"] == "finished" and data["slurm"]["job_id"] == job_id and data["slurm"]["state"] == "COMPLETED"
    text = slurm.study("--runs-dir", str(tmp_path / "runs"), "status", "two").stdout
    assert f"Slurm job {job_id}: COMPLETED on n[1-2]" in text


@pytest.mark.slow
def test_a_study_requeued_mid_study_resumes_to_exactly_the_study(slurm, tmp_path):
    trials, epochs = 3, 2
    (tmp_path / "req.yaml").write_text(yaml.safe_dump(spec(trials, epochs, 1)))
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    job_id = submitted(slurm.study(*slurm_args(tmp_path, "req", "--nodes", "1", "--no-figures", spec="req")))
    folder = tmp_path / "runs" / "req"

    def one_done_one_running() -> bool:
        states = [r.info.status for r in trial_runs(uri, "req")[2]]
        return states.count("FINISHED") >= 1 and "RUNNING" in states
    wait_for(one_done_one_running, 240, "a trial finished and another running", interval=1)
    requeued = slurm.ns.run(["scontrol", "requeue", job_id])
    assert requeued.returncode == 0, requeued.stderr
    # Slurm holds a requeued job back for about two minutes (its BeginTime): start it when pending.
    wait_for(lambda: slurm.job(job_id).get("JobState") == "PENDING", 60, "the job pending again")
    assert slurm.ns.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"]).returncode == 0
    job = slurm.wait_job(job_id, 300)
    log = slurm.logs(folder, job_id)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", log
    out = (folder / f"slurm-{job_id}.out").read_text()
    assert "restart 1" in out and "the study's record exists: resuming it" in out, log
    assert_whole_study(uri, storage, "req", trials, epochs)
    assert not leftovers(job_id, tmp_path / "mlflow.db")
    data = json.loads(slurm.study("--runs-dir", str(tmp_path / "runs"), "status", "req", "--json").stdout)
    assert data["state"] == "finished" and data["slurm"]["restarts"] == "1"


@pytest.mark.slow
def test_slurms_own_refusal_comes_back_in_one_line(slurm, tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(spec(1, 1, 1)))
    done = slurm.study(*slurm_args(tmp_path, "bad", "--nodes", "1", "--partition", "nosuch", spec="bad"))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "sbatch refused the job" in line and "nvalid partition" in line, line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
