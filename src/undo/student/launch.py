"""Multi-process student training through torchrun or `accelerate launch`.

We only build the launcher's command line and wait: DDP, FSDP and DeepSpeed are
the launchers' business (an accelerate config file picks among them).

Measured on a CPU-only machine (torch 2.13, accelerate 1.15): torchrun starts a
real gloo job; `accelerate launch --cpu --num_processes 2` starts ONE process,
and `--multi_gpu` starts two that each believe they are alone unless
ACCELERATE_USE_CPU is set. So without CUDA we set it, and tests check that the
trainer saw world_size == N.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from undo.errors import UserError
from undo.runstore import train_result_file
from undo.student.train import TrainResult


def launch_command(
    data_file: Path,
    out_dir: Path,
    cfg_yaml_path: Path,
    launcher: str,
    num_processes: int,
    accelerate_config: str | None = None,
    init_from: str | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> list[str]:
    entry = [
        "-m",
        "undo.student.train_entry",
        "--data",
        str(data_file),
        "--out",
        str(out_dir),
        "--config",
        str(cfg_yaml_path),
    ]
    if init_from:
        entry += ["--init-from", init_from]
    if not progress:
        entry.append("--no-progress")
    entry += list(overrides or [])
    if launcher == "torchrun":
        # --standalone: a private rendezvous on a free port, so parallel runs never collide
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(num_processes), *entry]
    if launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
        if accelerate_config:
            cmd += ["--config_file", accelerate_config]
        elif num_processes > 1:
            cmd.append("--multi_gpu")  # plain DDP; FSDP/DeepSpeed come from a config file
        return [*cmd, *entry]
    raise UserError(f"train.launcher must be 'torchrun' or 'accelerate' here (got '{launcher}')")


def _distributed_type(accelerate_config: str | None) -> str | None:
    if not accelerate_config:
        return None
    import yaml

    try:
        cfg = yaml.safe_load(Path(accelerate_config).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"train.accelerate_config: cannot read {accelerate_config}: {e}") from None
    return cfg.get("distributed_type") if isinstance(cfg, dict) else None


def _pdeathsig() -> Callable[[], object] | None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL) as a call, or None where the OS has no prctl."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def die_with_parent(parent: int | None = None, set_it: Callable[[], object] | None = None) -> None:
    """Linux: have the kernel SIGKILL this process when the process that started it dies.

    A `kill -9` of `undo run` cannot forward anything to the launcher it started; without
    this, the launcher (and, through train_entry calling this too, its workers) would train
    on and later rename a student into a run that has moved on. Between fork and exec it
    must not import or look anything up: pass `set_it` resolved beforehand."""
    set_it = set_it or _pdeathsig()
    if set_it is None:
        return
    set_it()
    if parent is not None and os.getppid() != parent:  # it died before we could ask
        os._exit(1)


def _launch_env(launcher: str, accelerate_config: str | None) -> dict[str, str]:
    """The training processes' environment: ours, unbuffered, and on a machine without CUDA
    what makes accelerate start real CPU processes."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    import torch

    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # else accelerate's processes each run alone
        kind = _distributed_type(accelerate_config) if launcher == "accelerate" else None
        if kind in ("FSDP", "DEEPSPEED"):  # accelerate shards only on accelerators
            print(f"undo: no CUDA here: accelerate runs the {kind} config {accelerate_config} as "
                  "plain data parallel on CPU processes (same result, no sharding)", file=sys.stderr)
    return env


def launch_training(
    data_file: Path,
    out_dir: Path,
    cfg_yaml_path: Path,
    launcher: str,
    num_processes: int,
    accelerate_config: str | None = None,
    init_from: str | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Run `undo.student.train_entry` under the launcher, wait, return its TrainResult."""
    if num_processes < 1:
        raise UserError(f"train.num_processes must be >= 1 (got {num_processes})")
    if accelerate_config and not Path(accelerate_config).is_file():
        raise UserError(f"train.accelerate_config: file not found: {accelerate_config}")
    cmd = launch_command(
        data_file, out_dir, cfg_yaml_path, launcher, num_processes,
        accelerate_config, init_from, overrides, progress,
    )
    env = _launch_env(launcher, accelerate_config)
    # stdout (the progress bar) passes straight through; stderr is echoed and its
    # tail kept for the error message
    tail: collections.deque[str] = collections.deque(maxlen=40)
    me, set_it = os.getpid(), _pdeathsig()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace",
                            preexec_fn=(lambda: die_with_parent(me, set_it)) if set_it else None)
    assert proc.stderr is not None

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            sys.stderr.write(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    reader.join(timeout=5)
    if rc != 0:
        raise UserError(
            f"{launcher} training failed (exit {rc}): {' '.join(cmd)}\n" + "".join(tail).rstrip()
        )
    result_file = train_result_file(out_dir)
    if not result_file.exists():
        raise UserError(f"{launcher} training exited 0 but wrote no {result_file}")
    return TrainResult(**json.loads(result_file.read_text()))
