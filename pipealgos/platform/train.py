"""`train`: one host's training job under the SageMaker container contract.

Reads ``input/config/*.json``, resolves the algorithm and its hyperparameters, checks the
channels and hosts against what the algorithm declares (:mod:`.registry`), picks the device it
runs on, streams the channels, writes the model atomically to ``model/`` (the leader only,
with the resolved value of every ``auto`` and the model's input width in its manifest), and
prints metric lines. Any error writes a one-paragraph reason to ``output/failure`` and exits
non-zero, leaving no model; SIGTERM (StopTrainingJob, MaxRuntimeInSeconds) does the same
promptly, and SIGTERMs arriving after the first are ignored while the job winds down. A
``failure`` file left in a reused ML root by an earlier run is removed at start.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback

import numpy as np
import torch

from pipealgos.algorithms.base import TrainingContext
from pipealgos.algorithms.tensors import pick_device
from pipealgos.io import DataError

from .channels import JobChannels, check_channels
from .config import (ConfigError, MLRoot, read_hyperparameters, read_input_data_config,
                     read_resource_config)
from .distributed import init_distributed, shutdown_distributed, wait_for_all_hosts
from .hyperparameters import HyperparameterError
from .metrics import MetricsReporter
from .model_store import save_model
from .registry import UnknownAlgorithm, get_algorithm
from .sagemaker_artifact import sagemaker_format_requested

EXIT_CLIENT_ERROR = 1  # bad input, configuration or hyperparameters
EXIT_ALGORITHM_ERROR = 2  # a bug or an environment failure
EXIT_TERMINATED = 143
MAX_FAILURE_CHARS = 1024


class Terminated(Exception):
    """SIGTERM arrived (StopTrainingJob or MaxRuntimeInSeconds)."""


def _on_sigterm(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one must not interrupt the cleanup
    raise Terminated()


def write_failure(ml: MLRoot, message: str) -> None:
    """``output/failure``: the first 1024 characters become the job's FailureReason."""
    ml.output_dir.mkdir(parents=True, exist_ok=True)
    ml.failure_file.write_text(message[:MAX_FAILURE_CHARS] + ("\n" if len(message) < MAX_FAILURE_CHARS else ""))


def resolve_algorithm_name(explicit: str | None) -> str:
    name = explicit or os.environ.get("PIPEALGOS_ALGORITHM")
    if not name:
        raise UnknownAlgorithm("no algorithm chosen: pass --algorithm NAME or set PIPEALGOS_ALGORITHM")
    return name


def run_training(ml: MLRoot, algorithm: str | None = None) -> int:
    """Run the job; returns the exit status."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _is_main_thread() else None
    initial_threads = torch.get_num_threads()
    resources = None
    report = MetricsReporter("algo-1")
    started = time.time()
    try:
        if not ml.root.is_dir():
            raise ConfigError(f"the ML root {ml.root} does not exist or is not a folder: pass --ml-root DIR "
                              "(or PIPEALGOS_ML_ROOT) naming the folder that holds input/config/")
        ml.failure_file.unlink(missing_ok=True)
        resources = read_resource_config(ml)
        report = MetricsReporter(resources.current_host)
        spec = get_algorithm(resolve_algorithm_name(algorithm))
        raw = read_hyperparameters(ml)
        values = spec.schema.parse(raw)
        configs = read_input_data_config(ml)
        check_channels(spec, configs)
        also_sagemaker = sagemaker_format_requested(spec)  # PIPEALGOS_MODEL_FORMAT=sagemaker
        if spec.max_hosts is not None and len(resources.hosts) > spec.max_hosts:
            raise ConfigError(f"{spec.name} trains on at most {spec.max_hosts} host(s); the job has "
                              f"{len(resources.hosts)}: set InstanceCount to {spec.max_hosts}")
        channels = JobChannels(ml, configs, spec)
        device = pick_device(spec.devices)
        topo = init_distributed(resources, device)
        threads = leave_a_core_for_the_reader(device)
        report.info(f"pipealgos {spec.name}: host {topo.host} (rank {topo.rank} of {topo.world_size}), "
                    f"device {device}, {threads} compute thread(s), hyperparameters {values}")
        ctx = TrainingContext(channels=channels, report=report, rank=topo.rank, world_size=topo.world_size,
                              device=device, tuning_job="_tuning_objective_metric" in raw,
                              sparse_input=spec.sparse_input)
        model = spec.train(spec.schema.to_params(values), ctx)
        wait_for_all_hosts()
        if ctx.resolved:
            report.info(f"resolved hyperparameters: {ctx.resolved}")
        if topo.is_leader:
            arrays = model.to_arrays()
            _check_finite(arrays, spec.name)
            resolved = {**values, **ctx.resolved}
            sagemaker_files = spec.sagemaker_format.export(arrays, resolved) if also_sagemaker else None
            save_model(ml.model_dir, spec.name, values, arrays, resolved=ctx.resolved,
                       feature_dim=int(model.feature_dim), extra_files=sagemaker_files)
        report.info(f"training finished in {time.time() - started:.1f} s")
        shutdown_distributed()
        return 0
    except Terminated:
        _fail(ml, report, "Training was stopped by SIGTERM (StopTrainingJob or MaxRuntimeInSeconds) "
              "before it finished; no model was written.")
        return EXIT_TERMINATED
    except (HyperparameterError, DataError, ConfigError, UnknownAlgorithm) as exc:
        _fail(ml, report, f"ClientError: {exc}")
        return EXIT_CLIENT_ERROR
    except Exception as exc:  # anything else: keep the reason readable, the trace in the log
        detail = _distributed_hint(exc, resources)
        _fail(ml, report, f"AlgorithmError: {type(exc).__name__}: {exc}{detail}", trace=traceback.format_exc())
        return EXIT_ALGORITHM_ERROR
    finally:
        torch.set_num_threads(initial_threads)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_finite(arrays: dict[str, np.ndarray], algorithm: str) -> None:
    """A model holding NaN or infinity is never saved (it would answer every request with it)."""
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise RuntimeError(f"{algorithm} produced non-finite values in model array '{name}'; no model was "
                               "written (check the data's scale and the learning-rate hyperparameters)")


def leave_a_core_for_the_reader(device: torch.device) -> int:
    """Sets torch's intra-op threads for a CPU job to one fewer than it would use (its default
    is a thread per core, or OMP_NUM_THREADS): the channel reader decodes on a thread of its own
    at the same time, and with every core taken by torch the two stall each other. On 2 cores
    one compute thread trained PCA 2.2x and k-means (k = 10) 1.3x faster than two.
    ``PIPEALGOS_COMPUTE_THREADS`` overrides the count. Returns the count in use."""
    configured = os.environ.get("PIPEALGOS_COMPUTE_THREADS")
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ConfigError(f"PIPEALGOS_COMPUTE_THREADS={configured!r} is not a thread count; "
                              "set it to a whole number >= 1, or unset it to leave one core to the reader")
        torch.set_num_threads(int(configured))
    elif device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() - 1))
    return torch.get_num_threads()


def _fail(ml: MLRoot, report: MetricsReporter, message: str, trace: str | None = None) -> None:
    if trace:
        sys.stderr.write(trace)
    report.error(message)
    write_failure(ml, message)


def _distributed_hint(exc: Exception, resources) -> str:
    text = str(exc).lower()
    if resources is not None and len(resources.hosts) > 1 and any(
        word in text for word in ("timeout", "timed out", "connection", "gloo", "nccl", "peer")
    ):
        return " (a collective operation with the other hosts failed: another host probably died first)"
    return ""


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()

