"""SLURM support: the cluster profile on a real one-node Slurm cluster on localhost.

The `slurm_cluster` fixture starts the cluster with docs/slurm_local_cluster.sh (which installs the
Debian packages if needed) and stops it in its finalizer, also when a test fails. It skips only where
there is no root or no apt-get to install Slurm with.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from netpert.config import validate_config
from test_workflow_shards import EXACT_ALWAYS
from workflow_utils import ROOT, TINY_CONFIG_PATH, run_snakemake, write_tiny_config

SCRIPT = ROOT / "docs" / "slurm_local_cluster.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
STATE = Path(os.environ.get("NETPERT_SLURM_STATE", "/tmp/netpert-slurm"))
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
#: the longest the tiny workflow may take through the cluster (a slow or busy machine: 20+ minutes)
RUN_TIMEOUT = 2400

# On the local cluster: no accounting storage, so job states come from squeue (the cluster keeps
# finished jobs MinJobAge=3600 s by default; the tests record them as they run, JobRecorder); poll
# every 2 s instead of 40 so that the test is quick; keep the SLURM logs of successful jobs so that
# the test can read them.
CLUSTER_ARGS = [
    "--workflow-profile",
    str(PROFILE),
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
    "--slurm-keep-successful-logs",
]


def _packages_installed() -> bool:
    if not shutil.which("dpkg-query"):
        return False
    for name in PACKAGES:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
        if "install ok installed" not in proc.stdout:
            return False
    return True


def _script(action: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    return subprocess.run(["bash", str(SCRIPT), action], capture_output=True, text=True, timeout=timeout, env=env)


def _daemon_pids() -> dict[str, int]:
    """The daemons the script started that are still alive (by its pidfiles)."""
    alive = {}
    for name in ("munged", "slurmctld", "slurmd"):
        f = STATE / "pids" / f"{name}.pid"
        try:
            pid = int(f.read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm == name and state != "Z":  # a zombie has died, it only waits to be reaped
            alive[name] = pid
    return alive


def _live_job_steps() -> list[int]:
    """slurmstepd processes alive on this machine (not zombies, which a PID 1 that does not reap
    leaves behind)."""
    steps = []
    for pid in subprocess.run(["pgrep", "-x", "slurmstepd"], capture_output=True, text=True).stdout.split():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            steps.append(int(pid))
    return steps


def _slurm(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    return subprocess.run(list(args), capture_output=True, text=True, check=True, env=env, timeout=60).stdout


#: squeue's columns for a job: name (the run id), id, comment (rule_<rule>...), state, memory, CPUs
SQUEUE_FORMAT = "%j|%i|%k|%T|%m|%C"


def _squeue_rows() -> list[list[str]]:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    proc = subprocess.run(
        ["squeue", "--states=all", "--noheader", f"--format={SQUEUE_FORMAT}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if proc.returncode != 0:  # slurmctld busy for a moment: the next poll reads it
        return []
    return [line.split("|", 5) for line in proc.stdout.splitlines() if line.count("|") == 5]


class JobRecorder:
    """Records every job squeue shows, polling while a run goes on, so that the jobs of a run can be
    checked after it ends however long it took: without accounting storage squeue is the only record,
    and it forgets a finished job MinJobAge seconds after it ends (3600 s on the local cluster; a
    cluster started with a smaller NETPERT_SLURM_MIN_JOB_AGE, or a run longer than it, would otherwise
    lose its first jobs before the check). The last row seen of a job wins (its latest state)."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.rows: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _record(self):
        for row in _squeue_rows():
            self.rows[row[1]] = row

    def _poll(self):
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=120)
        self._record()  # the final states

    def jobs_of_run(self, run_id: str) -> pd.DataFrame:
        """Every SLURM job of one snakemake run (its jobs are named by the run id)."""
        rows = [row[1:] for row in self.rows.values() if row[0] == run_id]
        df = pd.DataFrame(rows, columns=["slurm_id", "comment", "state", "mem", "cpus"])
        df["cpus"] = df["cpus"].astype(int)
        df["mem_mb"] = df["mem"].map(_mem_to_mb)
        return df.set_index("slurm_id")


def _cluster_report(job: str | None = None) -> str:
    """What the cluster says about its node, its queue (with each pending job's reason) and one job,
    and the tail of slurmctld's log: for the message of a failed check."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    parts = []
    commands = [["sinfo", "-N", "-l"], ["squeue", "--states=all", "--format=%i %j %T %M %m %C %R"]]
    if job:
        commands.append(["scontrol", "show", "job", job])
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        parts.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    log = STATE / "logs" / "slurmctld.log"
    if log.exists():
        parts.append(f"--- {log} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
    return "\n".join(parts)


def _wait_for_state(job: str, state: str, seconds: float) -> str:
    """Polls squeue until `job` reaches `state` or `seconds` pass; returns the last state seen."""
    deadline = time.monotonic() + seconds
    seen = ""
    while True:
        seen = _slurm("squeue", "--states=all", "--noheader", "-j", job, "--format=%T").strip()
        if seen == state or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def _mem_to_mb(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text.strip())
    assert m, f"cannot read SLURM memory {text!r}"
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return round(float(m.group(1)) * factor)


def _run_id(output: str) -> str:
    m = re.search(r"SLURM run ID: (\S+)", output)
    assert m, "snakemake did not use the SLURM executor:\n" + output[-3000:]
    return m.group(1)


def _submissions(output: str) -> list[tuple[int, str, Path]]:
    """(snakemake job id, SLURM job id, SLURM log) of every sbatch submission snakemake reported."""
    pattern = r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\."
    return [(int(j), s, Path(log)) for j, s, log in re.findall(pattern, output)]


def _executed_jobs(output: str) -> dict[int, dict]:
    """Snakemake's job blocks (`rule NAME:` or `checkpoint NAME:` ... `jobid:` ... `resources:`), by
    job id; local rules (`localrule NAME:`) marked."""
    jobs = {}
    for m in re.finditer(r"^(local)?(?:rule|checkpoint) (\w+):\n((?:    .*\n)+)", output, re.M):
        body = m.group(3)
        jobid = int(re.search(r"^    jobid: (\d+)$", body, re.M).group(1))
        threads = re.search(r"^    threads: (\d+)$", body, re.M)
        mem = re.search(r"^    resources: .*\bmem_mb=(\d+)", body, re.M)
        jobs[jobid] = {
            "rule": m.group(2),
            "local": bool(m.group(1)),
            "threads": int(threads.group(1)) if threads else 1,
            "mem_mb": int(mem.group(1)) if mem else None,
        }
    return jobs


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running one-node cluster (started here, stopped at the end unless it was running before)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the local Slurm cluster needs Linux (Debian/Ubuntu)")
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (slurmd launches jobs as their users)")
    if not _packages_installed() and not shutil.which("apt-get"):
        pytest.skip(f"Slurm is not installed and there is no apt-get to install {', '.join(PACKAGES)}")
    STATE.parent.mkdir(parents=True, exist_ok=True)
    # one test session at a time on this machine's cluster (another session's finalizer must not
    # stop the cluster under this one)
    lock = open(f"{STATE}.lock", "w")
    deadline = time.monotonic() + 900
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"another test session holds {STATE}.lock for more than 15 minutes")
            time.sleep(2)
    was_running = _script("status").returncode == 0
    try:
        proc = _script("start", timeout=900)  # includes apt-get on a fresh machine
        if proc.returncode != 0:
            pytest.fail(
                f"docs/slurm_local_cluster.sh start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        info = _slurm("sinfo", "--noheader", "-N", "-n", "localhost", "--format=%P|%T|%c|%m").split("|")
        # the plugin follows jobs with squeue only where MinJobAge >= 3 x the first status check's delay
        # (2 s here), else it goes back to sacct, which fails without accounting storage
        age = re.search(r"^MinJobAge\s*=\s*(\d+)", _slurm("scontrol", "show", "config"), re.M)
        init = int(CLUSTER_ARGS[CLUSTER_ARGS.index("--slurm-init-seconds-before-status-checks") + 1])
        assert age and int(age.group(1)) >= 3 * init, (
            f"the local cluster's MinJobAge is {age.group(1) if age else '?'} s: restart it "
            "(docs/slurm_local_cluster.sh stop; start)"
        )
        yield {"partition": info[0].rstrip("*"), "cpus": int(info[2]), "mem_mb": int(info[3])}
    finally:
        try:
            if not was_running:
                stop = _script("stop")
                left = _daemon_pids()
                assert (
                    stop.returncode == 0 and not left
                ), f"slurm_local_cluster.sh stop left daemons running: {left}\n{stop.stdout}\n{stop.stderr}"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()


@pytest.fixture
def no_slurm_conf(monkeypatch):
    # the local cluster's slurm.conf sits at the default path; an inherited SLURM_CONF would win
    monkeypatch.delenv("SLURM_CONF", raising=False)


# --- the profile itself (no cluster needed) -------------------------------------------------------


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def test_profile_sets_executor_retries_and_defaults():
    prof = _profile()
    assert prof["executor"] == "slurm"
    assert prof["retries"] == 1
    assert isinstance(prof["jobs"], int) and prof["jobs"] >= 1
    assert prof["latency-wait"] >= 5
    defaults = prof["default-resources"]
    assert {"slurm_partition", "runtime", "mem_mb"} <= set(defaults)
    # cpus_per_task would override the rules' threads in the sbatch call
    assert "cpus_per_task" not in defaults


def test_profile_leaves_rule_sizing_alone():
    """set-resources replaces a rule's resource: the profile must not drop threads, attempt-scaled
    memory and time, or the GPU request that the rules compute."""
    prof = _profile()
    for rule, res in (prof.get("set-resources") or {}).items():
        assert not {"mem_mb", "mem", "runtime", "gpu", "cpus_per_task", "threads"} & set(res), rule
    assert not prof.get("set-threads")


def test_sbatch_call_keeps_gpu_threads_and_memory_of_a_rule():
    """The sbatch call the plugin builds for a GPU job under the profile's defaults: --gpus from the
    rule's `gpu: 1`, --cpus-per-task from its threads, --mem from its mem_mb, the profile's partition."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    class Job:
        threads = 3
        resources = Resources({**_profile()["default-resources"], "gpu": 1, "mem_mb": 8000, "runtime": 120})

    params = {
        "run_uuid": "run",
        "slurm_logfile": Path("x.log"),
        "comment_str": "rule_isp_infer",
        "account": "",
        "partition": f" -p {Job.resources['slurm_partition']}",
        "workdir": "/tmp",
    }
    call = get_submit_command(Job(), params) + set_gres_string(Job())
    assert "--gpus=1" in call
    assert "--cpus-per-task=3" in call
    assert "--mem 8000" in call and "-t 120" in call
    assert f"-p {_profile()['default-resources']['slurm_partition']}" in call


# --- on the cluster -------------------------------------------------------------------------------


@pytest.mark.slurm
def test_local_cluster_runs_a_job_with_its_memory(slurm_cluster, no_slurm_conf, tmp_path):
    assert slurm_cluster["partition"] == _profile()["default-resources"]["slurm_partition"]
    assert slurm_cluster["cpus"] == len(os.sched_getaffinity(0))
    out = tmp_path / "job.out"
    job = _slurm(
        "sbatch", "--parsable", "--mem", "300", "-o", str(out), "--wrap", "echo mem=$SLURM_MEM_PER_NODE"
    ).strip()
    # an empty one-node cluster starts it at once; the limit only allows for a loaded machine
    state = _wait_for_state(job, "COMPLETED", 120)
    assert state == "COMPLETED", _cluster_report(job)
    for _ in range(60):  # the output file may land a moment after the state changes
        if out.exists():
            break
        time.sleep(0.5)
    assert out.read_text().strip() == "mem=300"
    # idempotent start: a second start finds it running and changes nothing
    pids = _daemon_pids()
    assert _script("start").returncode == 0 and _daemon_pids() == pids


RETRY_SNAKEFILE = """
# fails on the cluster when the job exceeds its memory (SLURM kills it), succeeds on the retry
rule hog:
    output:
        "hog.txt",
    resources:
        mem_mb=lambda wc, attempt: {base_mb} * attempt,
        runtime=5,
    shell:
        '''
        slurm_mem=$(scontrol show job "$SLURM_JOB_ID" | grep -o 'MinMemoryNode=[^ ]*' | cut -d= -f2)
        echo "$SLURM_JOB_ID {{resources.mem_mb}} $slurm_mem" >> attempts.txt
        {python} -c "import time; b = b'x' * ({hog_mb} * 2**20); time.sleep(4)"
        echo "$SLURM_JOB_ID {{resources.mem_mb}} $slurm_mem" > {{output}}
        '''
"""


@pytest.mark.slurm
def test_job_over_its_memory_is_retried_with_twice_the_memory(slurm_cluster, no_slurm_conf, tmp_path):
    """A job that outgrows its memory on the cluster is killed by SLURM, and the profile's `retries: 1`
    submits it once more with mem_mb scaled by `attempt` (the convention of every rule here)."""
    base_mb, hog_mb = 1000, 1300
    (tmp_path / "Snakefile").write_text(RETRY_SNAKEFILE.format(base_mb=base_mb, hog_mb=hog_mb, python=sys.executable))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--directory",
        str(tmp_path),
        "--snakefile",
        str(tmp_path / "Snakefile"),
        *CLUSTER_ARGS,
    ]
    with JobRecorder() as recorder:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            pytest.fail(f"snakemake did not finish within 600 s\n{err[-3000:]}\n{_cluster_report()}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]

    attempts = [line.split() for line in (tmp_path / "attempts.txt").read_text().splitlines()]
    assert len(attempts) == 2, attempts
    (first_id, first_mem, first_slurm), (second_id, second_mem, second_slurm) = attempts
    assert first_id != second_id
    # what snakemake asked for (resources.mem_mb) is what SLURM gave (scontrol's MinMemoryNode)
    assert (int(first_mem), _mem_to_mb(first_slurm)) == (base_mb, base_mb)
    assert (int(second_mem), _mem_to_mb(second_slurm)) == (2 * base_mb, 2 * base_mb)
    assert (tmp_path / "hog.txt").read_text().split() == attempts[1]

    jobs = recorder.jobs_of_run(_run_id(output))
    assert jobs.loc[first_id, "state"] in {"FAILED", "OUT_OF_MEMORY", "CANCELLED"}
    assert jobs.loc[second_id, "state"] == "COMPLETED"
    assert [jobs.loc[first_id, "mem_mb"], jobs.loc[second_id, "mem_mb"]] == [base_mb, 2 * base_mb]
    # SLURM's log of the first job says why it failed
    first_log = next(log for _, sid, log in _submissions(output) if sid == first_id)
    assert "exceeded memory limit" in first_log.read_text()


@pytest.mark.slurm
def test_cluster_whose_daemons_died_starts_again_with_an_empty_queue(slurm_cluster, no_slurm_conf, tmp_path):
    """Daemons killed without `stop` (a killed session, CI machine reused) leave a saved queue and
    running job steps behind. The next `start` ends those steps and clears the queue, so that a new
    job does not wait behind jobs whose submitter is gone."""
    cpus = slurm_cluster["cpus"]
    marker = f"netpert-stale-{os.getpid()}"
    old = [
        _slurm("sbatch", "--parsable", "-c", str(cpus), "-J", marker, "-o", str(tmp_path / "old-%j.out"), "--wrap", "sleep 600").strip()
        for _ in range(3)
    ]
    assert _wait_for_state(old[0], "RUNNING", 120) == "RUNNING", _cluster_report(old[0])
    for name, pid in _daemon_pids().items():  # a hard death: no stop, no scancel
        os.kill(pid, 9)
    deadline = time.monotonic() + 30
    while _daemon_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _daemon_pids()
    assert _live_job_steps(), "the killed cluster's job steps should still run (slurmstepd outlives slurmd)"

    proc = _script("start")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ending a job step left by an earlier run" in proc.stderr
    assert not _live_job_steps()
    queue = _slurm("squeue", "--states=all", "--noheader", "--format=%i %j %T")
    assert marker not in queue, queue
    out = tmp_path / "job.out"
    job = _slurm("sbatch", "--parsable", "-c", str(cpus), "-o", str(out), "--wrap", "echo fresh").strip()
    assert _wait_for_state(job, "COMPLETED", 120) == "COMPLETED", _cluster_report(job)


# Results whose content must be the same whatever ran them (seeded, single-threaded in the tiny
# config); other files (model artifacts, reports and timings) need only exist in both runs.
SAME_CONTENT = (
    "data/*.h5ad",
    "strata/*.h5ad",
    "strata/*.tsv",
    "aracne/*/*.tsv",
    "aracne/*/threshold.txt",
    "viper/*.h5ad",
    "viper/*.tsv",
    "isp/tokens/*.parquet",
    "isp/*/*.npz",
)


#: the embeddings in an ISP result file, compared by cosine where two int8 runs chose apart
INT8_EMBEDDINGS = ("original", "perturbed")


def _int8_choice(results: Path) -> tuple:
    """The int8 recipe and the tuning that quantize_onnx chose in a run, by timing on its machine."""
    from netpert.isp.methods import get_method

    report = json.loads((results / "isp" / f"{get_method('onnx_int8').artifact}.json").read_text())
    tuning = report.get("tuning") or {}
    return report["chosen"], tuning.get("batching"), tuning.get("batch_size"), tuning.get("threads")


def _assert_same_embedding_up_to_int8(a: np.ndarray, b: np.ndarray, min_cosine: float, what: str):
    """Two int8 runs whose recipes differ: every embedding of one has cosine >= min_cosine with the
    other's (each met the consistency bar against fp32 in its own run)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1]), np.asarray(b, dtype=np.float64).reshape(-1, b.shape[-1])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= min_cosine, f"{what}: cosine {cos.min():.6f} < {min_cosine}"


def _assert_same_results(local: Path, cluster: Path) -> int:
    """The cluster run made the same files as the local run, and the same results; returns how many
    files were compared by content.

    onnx_int8 is the one method whose numbers may differ between two runs of one config: quantize_onnx
    keeps the fastest recipe meeting the bar as measured on the machine at the time, and a loaded
    machine can make another recipe the fastest. Its embeddings are compared exactly where both runs
    chose the same recipe and tuning, and otherwise by cosine (the consistency bar's min_cosine); a
    cell with more perturbations than the tuned batch size is split over batches, each with its own
    activation scales, so the batch size matters too (seen: batch 32 locally, 4 on the cluster)."""
    same_int8 = _int8_choice(local) == _int8_choice(cluster)
    min_cosine = validate_config(yaml.safe_load(TINY_CONFIG_PATH.read_text()))["isp"]["bar"]["min_cosine"]

    def files(root):
        return {
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in {"logs", "benchmarks"} and not p.name.startswith(".")
        }

    local_files, cluster_files = files(local), files(cluster)
    assert local_files == cluster_files, sorted(local_files ^ cluster_files)
    compared = 0
    for rel in sorted(local_files):
        if not any(fnmatch.fnmatchcase(rel, pattern) for pattern in SAME_CONTENT):
            continue
        compared += 1
        a, b = local / rel, cluster / rel
        if rel.endswith(".h5ad"):
            x, y = ad.read_h5ad(a), ad.read_h5ad(b)
            pd.testing.assert_frame_equal(x.obs, y.obs, obj=rel)
            pd.testing.assert_frame_equal(x.var, y.var, obj=rel)
            xa = x.X.toarray() if hasattr(x.X, "toarray") else np.asarray(x.X)
            ya = y.X.toarray() if hasattr(y.X, "toarray") else np.asarray(y.X)
            np.testing.assert_allclose(xa, ya, rtol=1e-6, atol=1e-9, err_msg=rel)
        elif rel.endswith(".npz"):
            with np.load(a) as na, np.load(b) as nb:
                assert set(na.files) == set(nb.files), rel
                int8_apart = not same_int8 and rel.startswith("isp/onnx_int8/")
                for key in na.files:
                    if int8_apart and key in INT8_EMBEDDINGS:
                        _assert_same_embedding_up_to_int8(na[key], nb[key], min_cosine, f"{rel}:{key}")
                    elif int8_apart and key not in EXACT_ALWAYS:
                        continue  # derived from the embeddings (shift, top genes) or the run's settings
                    elif na[key].dtype.kind in "fc":
                        np.testing.assert_allclose(na[key], nb[key], rtol=1e-5, atol=1e-6, err_msg=f"{rel}:{key}")
                    else:
                        np.testing.assert_array_equal(na[key], nb[key], err_msg=f"{rel}:{key}")
        elif rel.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), obj=rel)
        elif rel.endswith(".tsv"):
            pd.testing.assert_frame_equal(
                pd.read_csv(a, sep="\t", keep_default_na=False),
                pd.read_csv(b, sep="\t", keep_default_na=False),
                check_exact=False,
                rtol=1e-6,
                obj=rel,
            )
        else:
            assert a.read_bytes() == b.read_bytes(), rel
    return compared


@pytest.mark.slurm
@pytest.mark.workflow
def test_tiny_workflow_through_slurm_profile_matches_local_run(slurm_cluster, no_slurm_conf, tiny_run, tmp_path):
    config = write_tiny_config(tmp_path)
    # jobs are recorded as the run goes (JobRecorder), so a long run (20 minutes on a slow machine)
    # still has every job checked; the timeout leaves room for that
    with JobRecorder() as recorder:
        proc = run_snakemake(tmp_path, config, CLUSTER_ARGS, check=False, timeout=RUN_TIMEOUT)
    output = proc.stdout + proc.stderr
    (tmp_path / "snakemake.stdout").write_text(output)
    assert proc.returncode == 0, output[-8000:]

    # every job went through sbatch once (no retry: each fits the threads and memory its rule asks
    # for, which SLURM enforces here) and completed on the cluster
    submissions = _submissions(output)
    assert submissions, "no job was submitted with sbatch"
    jobs = recorder.jobs_of_run(_run_id(output))
    assert set(jobs.index) == {sid for _, sid, _ in submissions}
    retried = [
        (sid, jobs.loc[sid, "comment"], jobs.loc[sid, "state"], log)
        for _, sid, log in submissions
        if jobs.loc[sid, "state"] != "COMPLETED"
    ]
    assert not retried, "jobs failed on the cluster and were retried:\n" + "\n".join(
        f"{sid} {comment} {state}\n{log.read_text()[-1500:] if log.is_file() else ''}"
        for sid, comment, state, log in retried
    )
    executed = _executed_jobs(output)
    remote = {j: info for j, info in executed.items() if not info["local"]}
    assert sorted(j for j, _, _ in submissions) == sorted(remote), "jobs that ran without sbatch"
    for jobid, slurm_id, log in submissions:
        info = remote[jobid]
        assert jobs.loc[slurm_id, "comment"].startswith(f"rule_{info['rule']}")
        # SLURM got the rule's own threads and memory, not a profile default
        assert jobs.loc[slurm_id, "cpus"] == info["threads"], (info, jobs.loc[slurm_id])
        assert jobs.loc[slurm_id, "mem_mb"] == info["mem_mb"], (info, jobs.loc[slurm_id])
        # SLURM's log of the job holds the job step's snakemake running that rule
        assert log.is_file() and log.name == f"{slurm_id}.log", log
        assert re.search(rf"^(rule|checkpoint) {info['rule']}:$", log.read_text(), re.M), log

    assert _assert_same_results(tiny_run / "results", tmp_path / "results") >= 2
