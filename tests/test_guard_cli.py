"""The guard's commands: `unlearn guard build/show`, `unlearn serve` refusing a bad policy before
vLLM starts, and `unlearn eval --guard` config checks. Errors are one line naming the problem."""

from __future__ import annotations

import json

from unlearnkit.cli import main


def test_build_refuses_an_empty_forget_file(tmp_path, tiny_dir, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["guard", "build", "--forget", str(empty), "--model", str(tiny_dir), "--out", str(tmp_path / "p")]) == 2
    assert "forget set is empty" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_build_refuses_unknown_config_keys(tmp_path, tiny_dir, capsys):
    qa = tmp_path / "f.jsonl"
    qa.write_text(json.dumps({"question": "Who is Kalo Mirten?", "answer": "A poet."}) + "\n")
    code = main(["guard", "build", "--forget", str(qa), "--model", str(tiny_dir), "--out", str(tmp_path / "p"),
                 "fpr=0.01", "strictness=9"])
    assert code == 2 and "strictness" in capsys.readouterr().err


def test_build_then_show(tmp_path, tiny_dir, capsys, guard_forget_set):
    qa = tmp_path / "f.jsonl"
    qa.write_text("".join(json.dumps(r.to_json()) + "\n" for r in guard_forget_set))
    out = tmp_path / "policy"
    assert main(["guard", "build", "--forget", str(qa), "--model", str(tiny_dir), "--out", str(out)]) == 0
    assert "uncalibrated" in capsys.readouterr().out      # no --retain: the default threshold, said so
    assert main(["guard", "show", str(out), "--json"]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["calibrated"] is False and cal["threshold"] == 0.75


def test_serve_checks_the_policy_before_starting_vllm(tmp_path, tiny_dir, tiny_policy, capsys):
    assert main(["serve", "--model", str(tiny_dir), "--guard", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_policy.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "index.faiss").write_bytes(b"garbage")
    assert main(["serve", "--model", str(tiny_dir), "--guard", str(broken)]) == 2
    assert "index.faiss does not match its checksum" in capsys.readouterr().err


def test_server_command_loads_the_plugin(tmp_path):
    from unlearnkit.guard.serve import server_command, server_env

    cmd = server_command("/m", 8123, extra=("--seed", "1"))
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--logits-processors") + 1] == "unlearnkit.guard.vllm_plugin:UnlearnGuard"
    assert cmd[-2:] == ["--seed", "1"] and "--logits-processors" not in server_command("/m", 1, guard=False)
    assert server_env(str(tmp_path))["UNLEARN_GUARD_POLICY"] == str(tmp_path.resolve())
    assert "--no-enable-prefix-caching" in cmd      # a cache hit tells one client of another's prompt


def test_a_cpu_server_prefills_prompts_whole(monkeypatch):
    """On CPU a seeded request prefilled in chunks kills vLLM's engine (its CPU generator cannot be
    rewound): the server prefills whole prompts, with a token budget the model's context fits in."""
    from unlearnkit.guard import serve

    monkeypatch.setattr(serve, "_has_cuda", lambda: False)
    cmd = serve.server_command("/m", 8123, max_model_len=4096)
    assert "--no-enable-chunked-prefill" in cmd and cmd[cmd.index("--max-num-batched-tokens") + 1] == "4096"
    monkeypatch.setattr(serve, "_has_cuda", lambda: True)
    assert "--no-enable-chunked-prefill" not in serve.server_command("/m", 8123)


def test_eval_guard_checks_engine_and_tokenizer(tiny_policy, tmp_path, capsys, tiny_tokenizer_factory,
                                               tiny_model_factory):
    # teacher-forced metrics through a guard are measured (tests/test_compare.py); a policy built
    # for another tokenizer (here: the policy's tiny one plus one token) is refused before anything runs
    other = tmp_path / "other-tokenizer"
    tok = tiny_tokenizer_factory()
    tok.add_tokens(["<extra>"])
    tiny_model_factory(len(tok)).save_pretrained(other)
    tok.save_pretrained(other)
    code = main(["eval", "--model", str(other), "--benchmark", "synthetic", "--guard", str(tiny_policy),
                 "--metrics", "rouge,truth_ratio"])
    assert code == 2 and "was compiled for the tokenizer of" in capsys.readouterr().err
    code = main(["eval", "--model", str(other), "--benchmark", "synthetic", "--guard", str(tiny_policy),
                 "--metrics", "rouge", "--engine", "transformers"])
    assert code == 2 and "engine=vllm" in capsys.readouterr().err
