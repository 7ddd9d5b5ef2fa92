"""Tool calls, the sandboxed Python tool, the ReAct loop and tool-use traces."""

from __future__ import annotations

import os

import pytest
import torch

from llmlab.agent import (
    AgentConfig,
    AgentRun,
    ReActAgent,
    Task,
    Tool,
    ToolError,
    arithmetic_tasks,
    call_schema,
    observation,
    parse_call,
    run_call,
    run_python,
    solution_lines,
    trace_example,
)
from llmlab.limits import Limits

ECHO = Tool("echo", "Echo a word.", {"type": "object", "properties": {"word": {"type": "string"}},
                                      "required": ["word"]}, lambda word: word.upper())
BOOM = Tool("boom", "Fail.", {"type": "object", "properties": {}}, lambda: 1 / 0)


def test_parse_call_says_what_is_wrong():
    assert parse_call('{"name":"echo","arguments":{"word":"hi"}}', [ECHO]).arguments == {"word": "hi"}
    assert parse_call('{"arguments": {"word": "x"}, "name": "echo"}', [ECHO]).name == "echo"
    for text, words in [("{oops", "not JSON"), ('{"name":"nope","arguments":{}}', "unknown tool"),
                        ('{"name":"echo","arguments":{"word":3}}', "type string"),
                        ('{"name":"echo"}', '"arguments"')]:
        with pytest.raises(ToolError, match=words):
            parse_call(text, [ECHO])
    assert run_call(parse_call('{"name":"boom","arguments":{}}', [BOOM]), [BOOM]).startswith(
        "error: ZeroDivisionError")
    assert call_schema([ECHO])["properties"]["name"] == {"const": "echo"}
    assert "anyOf" in call_schema([ECHO, BOOM])


def test_python_tool_runs_and_contains():
    ok = run_python("print(sum(range(10)))")
    assert ok.ok and ok.output.strip() == "45"
    os.environ["LLMLAB_SECRET_FOR_TEST"] = "s3cret"
    try:
        env = run_python("import os; print(os.environ.get('LLMLAB_SECRET_FOR_TEST'))")
    finally:
        del os.environ["LLMLAB_SECRET_FOR_TEST"]
    assert env.output.strip() == "None"  # no variable of the caller's reaches the tool
    loop = run_python("while True: pass", timeout=1.0)
    assert not loop.ok and "timed out" in loop.error
    crash = run_python("import os; os.abort()")
    assert not crash.ok and "SIGABRT" in crash.error
    err = run_python("raise KeyError('k')")
    assert not err.ok and err.error.startswith("KeyError")
    mem = run_python("x = bytearray(400 << 20)", limits=Limits(memory_bytes=256 << 20, cpu_seconds=5))
    assert not mem.ok and "MemoryError" in mem.error
    cpu = run_python("while True: pass", timeout=10.0, limits=Limits(cpu_seconds=1))
    assert not cpu.ok and "CPU time limit" in cpu.error
    big = run_python("print('x' * 10000)", max_output=100)
    assert big.ok and len(big.output) < 200 and "cut" in big.output


def test_observation_is_one_line():
    assert observation("a\n\n b \nc", 100) == "a | b | c"
    assert observation("x" * 50, 10) == "xxxxxxx..."


def test_agent_step_rules(book):
    model, tok = book
    agent = ReActAgent(model, tok, [ECHO], AgentConfig())
    run = AgentRun("Task: t\n")
    assert agent.step(run, "Thought: think") is False
    assert agent.step(run, 'Call: {"name":"echo","arguments":{"word":"hi"}}') is False
    assert run.transcript.endswith("Result: HI\n") and run.calls == 1
    assert agent.step(run, 'Call: {"name":"echo","arguments":{}}') is False
    assert run.invalid_calls == 1 and "Result: error:" in run.transcript
    assert agent.step(run, "Answer: HI") is True and run.answer == "HI"
    assert agent.step(AgentRun(""), "hello") is True


def test_constrained_agent_never_writes_a_bad_call(book):
    model, tok = book
    runs = ReActAgent(model, tok, [ECHO], AgentConfig(max_steps=3, max_tokens=40, constrained=True)
                      ).run_many(["Say hi.", "What is 2 + 2?"])
    for run in runs:
        lines = run.transcript.splitlines()[1:]
        assert all(ln.startswith(("Thought: ", "Call: ", "Result: ", "Answer: ")) for ln in lines), lines
        assert run.invalid_calls == 0


def test_a_constrained_call_out_of_tokens_is_cut_not_invalid(book, monkeypatch):
    model, tok = book
    agent = ReActAgent(model, tok, [ECHO], AgentConfig(max_steps=2, max_tokens=40, constrained=True))
    run = AgentRun("Task: t\n")
    assert agent.step(run, 'Call: {"name":"echo","arguments":{"word":"hihihihi', cut=True) is False
    assert (run.calls, run.cut_calls, run.invalid_calls) == (1, 1, 0)
    assert "Result: error: the call was cut before its end" in run.transcript
    # the loop tells a cut line by its missing newline (a finished constrained line ends with one)
    import llmlab.agent.react as react

    call = 'Call: {"name":"echo","arguments":{"word":"hi'
    lines = iter([[call], [call + '"}}\n']])
    monkeypatch.setattr(react, "complete", lambda *args, **kwargs: next(lines))
    (run,) = agent.run_many(["t"])
    assert (run.calls, run.cut_calls, run.invalid_calls) == (2, 1, 0), run.transcript
    assert run.transcript.endswith("Result: HI\n")


def test_traces_train_only_the_model_lines(book):
    _, tok = book
    task = arithmetic_tasks(1, seed=3)[0]
    assert str(eval(task.question[len("What is "):-1])) == task.answer  # noqa: S307
    lines = solution_lines(task, lambda name, args: "42")
    assert [t.split(":")[0] for t, _ in lines] == ["Task", "Thought", "Call", "Result", "Answer"]
    ids, labels = trace_example(tok, lines)
    trained = "".join(tok.decode([i]) for i in labels if i != -100)
    assert trained == "".join(t + "\n" for t, by_model in lines if by_model)
    assert "Task:" not in trained and "Result:" not in trained
    lookup = solution_lines(Task("Find the function: open it", "lookup", "a.py::f"),
                            lambda name, args: "a.py::f  Open it. | b.py::g  x")
    assert lookup[-1] == ("Answer: a.py::f", True) and '"search"' in lookup[2][0]


def test_lora_tool_tuning_learns_the_trace_and_merges(book):
    from llmlab.agent import ToolTuneConfig, finetune_tool_use
    from llmlab.peft import LoRALinear

    model, tok = book
    tasks = arithmetic_tasks(16, seed=0)
    examples = [trace_example(tok, solution_lines(t, lambda name, args, t=t: t.answer)) for t in tasks]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, losses = finetune_tool_use(model, examples, ToolTuneConfig(steps=12, batch_size=8, lr=3e-3))
    assert sum(losses[-3:]) / 3 < losses[0] * 0.8
    assert not any(isinstance(mod, LoRALinear) for mod in tuned.modules())  # merged: a plain model
    assert set(tuned.state_dict()) == set(model.state_dict())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # base untouched
    assert not all(torch.equal(before[k], v) for k, v in tuned.state_dict().items())
