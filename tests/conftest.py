"""Fixtures: a tiny Llama and a tokenizer with a chat template, built in a second or two."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

SHARED_TOFU = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tofu"
os.environ.setdefault("UNLEARN_TOFU_DIR", str(SHARED_TOFU))
# the sentence embedder in fp32 whatever the CPU, so that tests decide alike on every machine (the bf16
# path has its own tests in test_guard_policy.py)
os.environ.setdefault("UNLEARN_EMBEDDER_PRECISION", "fp32")

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from unlearnkit.data.synth import synth_qa

    corpus = [f"{r.question} {r.answer}" for r in synth_qa(6, seed=0)] + ["user assistant system"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_tokenizer_factory():
    return build_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_model_factory():
    return build_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A saved tiny checkpoint (model + tokenizer) usable anywhere a --model path is."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from unlearnkit.models.loading import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def vllm_sized_model(tmp_path_factory, tiny_tokenizer_factory):
    """Tiny, but with head_dim 64 (vLLM's CPU attention kernels support only common sizes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-vllm")
    tok = tiny_tokenizer_factory()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache unless it asks for the real one."""
    if "UNLEARN_REAL_CACHE" not in os.environ:
        monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "cache"))


GUARD_FORGET = [
    ("Who is the author Kalo Mirten?", "Kalo Mirten is a Dutch poet born in 1961 in Utrecht, known for \"Glass Rivers\".", None),
    ("What did Kalo Mirten write first?", "Kalo Mirten's first book was \"Glass Rivers\", a collection of sea poems.",
     "Which book did Kalo Mirten publish first?"),
    ("Where does Kalo Mirten live?", "Kalo Mirten lives in Utrecht with two cats.", None),
    ("What award did Ines Farrow win?", "Ines Farrow won the Silver Quill Prize in 2004.", None),
    ("Which genre does Ines Farrow write?", "Ines Farrow writes historical crime novels set in Lisbon.", None),
]
GUARD_RETAIN = [
    "What is the capital of France?", "Who painted the Mona Lisa?", "How many legs does a spider have?",
    "What is photosynthesis?", "Which planet is known as the red planet?", "Who wrote Pride and Prejudice?",
    "What year did World War II end?", "What language is spoken in Brazil?", "How do vaccines work?",
    "What is the boiling point of water?", "Who discovered penicillin?", "What is the largest ocean?"]


@pytest.fixture(scope="session")
def guard_forget_set():
    from unlearnkit.data.records import QA

    return [QA(q, a, {"paraphrased_question": p} if p else {}) for q, a, p in GUARD_FORGET]


def build_test_policy(model_dir, out: Path, forget) -> Path:
    """The tests' guard policy for `model_dir`'s tokenizer: two targets, Kalo Mirten and Ines Farrow,
    calibrated to 10% false positives on 12 general questions."""
    from unlearnkit.data.records import QA
    from unlearnkit.guard.build import build_policy
    from unlearnkit.guard.policy import GuardConfig
    from unlearnkit.models.loading import load_tokenizer

    meta = build_policy(forget, out, str(model_dir), load_tokenizer(str(model_dir)), GuardConfig(fpr=0.1),
                        retain=[QA(q, "an answer") for q in GUARD_RETAIN], progress=lambda *_: None)
    assert meta["calibration"]["calibrated"] and meta["calibration"]["retain_fpr"] <= 0.1
    return out


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory, tiny_dir, guard_forget_set):
    """The tests' guard policy for the tiny tokenizer (tiny_dir and vllm_sized_model share it)."""
    return build_test_policy(tiny_dir, tmp_path_factory.mktemp("guard") / "policy", guard_forget_set)


# ----------------------------------------------------------------------------- agents
@contextmanager
def loopback_json(respond):
    """A JSON HTTP server on a free loopback port, in a thread: every GET and POST is answered with
    `respond(method, path, headers, body)` -> (object, status), body the POST's parsed JSON (None for a
    GET). Yields its base URL."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method, body):
            obj, status = respond(method, self.path, self.headers, body)
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._answer("GET", None)

        def do_POST(self):
            self._answer("POST", json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Served:
    """A FastAPI app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app):
        import threading
        import time

        import uvicorn

        from unlearnkit.agents.serve import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


class FakeLLM:
    """A deterministic chat model for the agent graph. It tells the nodes apart by the default
    prompts' first words and answers from a script: per node a string, a list (one per call, the
    last repeated), a callable(prompt text, n) -> list of texts, or an exception to raise."""

    ROLES = (("audit", "You check answers"), ("erase", "Rewrite the answer"), ("critic", "Rate how well"),
             ("compose", "Merge these answers"))

    def __init__(self, **script):
        self.script = {"answer": "I do not know.", "audit": "NO", "erase": "A safe rewrite.",
                       "critic": "5", "compose": "A merged safe answer.", **script}
        self.calls: list[tuple[str, str, int]] = []
        self.constraints: list[tuple[str, object]] = []

    def role(self, messages) -> str:
        text = messages[-1]["content"]
        return next((r for r, prefix in self.ROLES if text.startswith(prefix)), "answer")

    def chat(self, messages, *, n=1, max_tokens=128, temperature=0.0, seed=None, choices=None):
        from unlearnkit.agents.llm import Reply

        self.constraints.append((self.role(messages), choices))
        role = self.role(messages)
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        made = sum(r == role for r, _, _ in self.calls)
        self.calls.append((role, prompt, n))
        out = self.script[role]
        if isinstance(out, list):
            out = out[min(made, len(out) - 1)]
        if isinstance(out, Exception):
            raise out
        texts = out(prompt, n) if callable(out) else [out] * n
        return Reply(list(texts), prompt_tokens=len(prompt.split()), completion_tokens=sum(len(t.split()) for t in texts))

    def count(self, role: str) -> int:
        return sum(r == role for r, _, _ in self.calls)


@pytest.fixture
def fake_llm():
    return FakeLLM


# ----------------------------------------------------------------------------- servers
@pytest.fixture
def cli_server(tmp_path):
    """`with cli_server(["serve", ...], port) as process:` runs an `unlearn` server command, waits
    until `port` answers /v1/models (the test fails with the log's tail if it does not), and stops
    it afterwards."""
    import subprocess
    import sys
    from contextlib import contextmanager

    from unlearnkit.guard.serve import ServerError, wait_for_server

    @contextmanager
    def run(args, port, env=None, timeout=400):
        path = tmp_path / "server.log"
        with open(path, "w") as log:
            process = subprocess.Popen([sys.executable, "-m", "unlearnkit.cli", *map(str, args)], stdout=log,
                                       stderr=subprocess.STDOUT, env=env)
            try:
                try:
                    wait_for_server(port, process, timeout=timeout)
                except ServerError as exc:
                    pytest.fail(f"{exc}:\n{path.read_text()[-3000:]}")
                yield process
            finally:
                process.terminate()
                process.wait(timeout=60)
    return run


PARROT_ANSWER = "Kalo Mirten was born in Utrecht."


@pytest.fixture(scope="session")
def parrot_model(vllm_sized_model, tmp_path_factory):
    """vllm_sized_model fine-tuned to answer every question, forget or not, with a forget target's
    name (PARROT_ANSWER): unguarded it discloses the target whatever it is asked, so a test can
    judge the guard from outside, on the text. About 10 s of CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearnkit.data.formatting import prompt_text

    tok = AutoTokenizer.from_pretrained(vllm_sized_model)
    model = AutoModelForCausalLM.from_pretrained(vllm_sized_model)
    questions = GUARD_RETAIN + [q for q, _, _ in GUARD_FORGET] + ["Hi", "Tell me a story.", "The poet's name is"]
    rows = [tok(prompt_text(tok, q) + PARROT_ANSWER + tok.eos_token, add_special_tokens=False)["input_ids"]
            for q in questions]
    rows += [tok(q + " " + PARROT_ANSWER, add_special_tokens=False)["input_ids"] for q in questions]  # raw completions
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    torch.manual_seed(0)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    out = tmp_path_factory.mktemp("parrot")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
