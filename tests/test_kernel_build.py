"""How the compiled kernels are built and chosen: the level, the message before a build, the
error under MEPROP_KERNELS=1, the rules that send a shape to the PyTorch path, and
``python -m meprop.kernels``."""

import subprocess
import sys
import warnings

import pytest
import torch

import meprop
from meprop import kernels
from meprop.kernels import __main__ as info
from meprop.kernels import paths

needs_kernels = pytest.mark.skipif(kernels.cpu() is None, reason="compiled kernels unavailable")


@pytest.fixture
def fresh_builds():
    """The build cache emptied before and after, so a test's fake build is not kept."""
    kernels._build.cache_clear()
    yield
    kernels._build.cache_clear()


def fake_load(calls):
    def load(name, sources, extra_cflags, extra_ldflags, verbose):
        calls.append((name, extra_cflags))
        return "module"
    return load


def test_level_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("MEPROP_CPU_ARCH", raising=False)
    assert kernels.level() == "native"
    monkeypatch.setenv("MEPROP_CPU_ARCH", "x86-64-v3")
    assert kernels.level() == "x86-64-v3"
    with kernels.using_level("x86-64-v2"):
        assert kernels.active_level() == "x86-64-v2"
    assert kernels.active_level() == "x86-64-v3"


def test_supported_levels_start_native_and_each_includes_the_ones_below():
    levels = kernels.supported_levels()
    assert levels[0] == "native"
    named = [level for level in levels if level != "native"]
    if kernels._is_x86():
        order = list(kernels.X86_LEVELS)
        assert named == order[order.index(named[0]):] if named else True


@pytest.mark.skipif(not kernels._is_x86(), reason="x86-64 levels")
def test_each_level_builds_under_its_own_name_with_its_march(monkeypatch, fresh_builds, capsys):
    from torch.utils import cpp_extension

    calls = []
    monkeypatch.setattr(cpp_extension, "load", fake_load(calls))
    monkeypatch.setattr(kernels, "_needs_compiling", lambda name: True)
    levels = [level for level in kernels.supported_levels() if level != "native"]
    for level in levels:
        assert kernels._build(level) == "module"
    names = [name for name, _ in calls]
    assert len(set(names)) == len(levels)
    for level, (name, flags) in zip(levels, calls, strict=True):
        assert name == "meprop_cpu_" + level.replace("-", "_")
        assert f"-march={level}" in flags
    # One line on stderr before each build that compiles, naming the level.
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(levels)
    assert all(line.startswith("compiling meProp's CPU kernels for ") for line in lines)
    assert levels[-1] in lines[-1]


def test_a_cached_build_prints_nothing(monkeypatch, fresh_builds, capsys):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", fake_load([]))
    monkeypatch.setattr(kernels, "_needs_compiling", lambda name: False)
    assert kernels._build("native") == "module"
    assert capsys.readouterr().err == ""


def broken_load(*args, **kwargs):
    raise RuntimeError("cpu.cpp:1:1: error: something the compiler said")


def test_failed_build_warns_once_and_falls_back(monkeypatch, fresh_builds):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    monkeypatch.setattr(kernels, "_required", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernels.cpu() is None
        assert kernels.cpu() is None  # cached: no second warning
    assert len(caught) == 1 and "pure-PyTorch" in str(caught[0].message)


def test_required_kernels_make_a_failed_build_an_error(monkeypatch, fresh_builds):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    monkeypatch.setattr(kernels, "_required", True)
    with pytest.raises(RuntimeError, match="MEPROP_KERNELS=1.*something the compiler said"):
        kernels.cpu()


def test_an_unknown_or_unsupported_level_is_named(monkeypatch, fresh_builds):
    monkeypatch.setattr(kernels, "_required", True)
    with pytest.raises(RuntimeError, match="'x86-64-v9' is not a level"):
        kernels._build("x86-64-v9")
    monkeypatch.setattr(kernels, "supported_levels", lambda: ("native",))
    if kernels._is_x86():
        with pytest.raises(RuntimeError, match="cannot run x86-64-v3 code"):
            kernels._build("x86-64-v3")


def test_environment_level_reaches_a_new_process():
    code = "from meprop import kernels; print(kernels.level())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, "MEPROP_CPU_ARCH": "x86-64-v2"},
                            check=True)
    assert result.stdout.strip() == "x86-64-v2"


@needs_kernels
def test_a_rule_sends_its_shapes_to_the_pytorch_path(monkeypatch):
    module = kernels.cpu()
    rule = paths.Rule(isas=(kernels.isa(module),), layer="linear", modes=("unified",),
                      applies=lambda shape: shape.rows <= 4, when="batch <= 4", why="a test")
    monkeypatch.setattr(paths, "RULES", (rule,))
    layer = meprop.Linear(16, 50, k=3, mode="unified")
    assert "MePropLinearFunction" not in layer(torch.randn(4, 16)).grad_fn.name()
    assert "MePropLinearFunction" in layer(torch.randn(5, 16)).grad_fn.name()
    with kernels.ignoring_paths():
        assert "MePropLinearFunction" in layer(torch.randn(4, 16)).grad_fn.name()
    per_example = meprop.Linear(16, 50, k=3, mode="per_example")
    assert "MePropLinearFunction" in per_example(torch.randn(4, 16)).grad_fn.name()


@needs_kernels
def test_a_rule_for_the_lstm_looks_at_its_sentences_and_k(monkeypatch):
    module = kernels.cpu()
    rule = paths.Rule(isas=(kernels.isa(module),), layer="lstm", modes=("per_example",),
                      applies=lambda shape: shape.rows == 1 and shape.k >= 10,
                      when="one sentence, k >= 10", why="a test")
    monkeypatch.setattr(paths, "RULES", (rule,))
    for k, compiled in ((10, False), (5, True)):
        lstm = meprop.LSTM(6, 12, k=k)
        output, _ = lstm(torch.randn(3, 1, 6, requires_grad=True))
        node = output.grad_fn.next_functions[0][0]  # behind the view back to [T, B, H]
        assert ("MePropLSTMLayerFunction" in node.name()) == compiled, k


def test_info_names_the_level_and_each_layers_path(monkeypatch):
    lines = info.report()
    text = "\n".join(lines)
    assert kernels.cpu_model() in text
    for title in ("meprop.Linear", "meprop.LSTM"):
        for mode in ("per_example", "unified"):
            assert any(line.startswith(title) and mode in line for line in lines), (title, mode)
    if kernels.cpu() is not None:
        assert f"compiled kernels for {kernels.active_level()}" in text
        assert kernels.isa(kernels.cpu()) in text


def test_info_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "meprop.kernels"], capture_output=True,
                            text=True, check=True)
    assert "meprop.LSTM, unified:" in result.stdout
