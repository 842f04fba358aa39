"""Static check of the TensorRT and CUDA calls, without TensorRT or a GPU.

- TensorRT: mypy type-checks the TensorRT modules against `tensorrt-stubs` (the TensorRT 10.13
  API), so a misspelled or removed call, enum member or attribute fails here. The stubs as
  published hold a few lines Python cannot parse (parameters named `in`, defaults out of
  order); a copy with those signatures loosened to (*args, **kwargs) is what mypy reads.
- cuda-python: every runtime function the backend calls by name is looked up in the installed
  `cuda.bindings.runtime` and its argument count bound to the function's signature.
  Only the installed major version (13.x in the pinned environment) is checked; 12.x cannot be
  installed beside it.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mobilesam_ros" / "core" / "backends" / "tensorrt"
MYPY_CONFIG = """\
[mypy]
python_version = 3.10
# Only TensorRT is read in full: other imports are taken as untyped, which keeps this fast.
follow_imports = skip
ignore_missing_imports = True
disable_error_code = var-annotated
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
follow_imports = normal
ignore_errors = True
"""
# Misspellings put into a copy of the modules: the check must report exactly these.
MISSPELLINGS = {
    "compat.py": [
        ("config.set_memory_pool_limit(", "config.set_memory_pool_limits("),
        ("config.clear_flag(flags.TF32)", "config.clear_flag(flags.TF33)"),
    ],
    "backend.py": [("context.execute_async_v3(", "context.execute_async_v4(")],
}


def _stub_files() -> list[Path]:
    try:
        files = metadata.files("tensorrt-stubs") or []
    except metadata.PackageNotFoundError:
        return []
    return [Path(f.locate()) for f in files if str(f).endswith(".pyi")]


def _loosened(text: str) -> str:
    """The stub text with every signature Python cannot parse replaced by (*args, **kwargs)."""
    lines = text.replace("(self, in: ", "(self, in_: ").splitlines()
    for _ in range(len(lines)):
        try:
            ast.parse("\n".join(lines))
            return "\n".join(lines) + "\n"
        except SyntaxError as error:
            index = (error.lineno or 1) - 1
            match = re.match(r"(\s*def \w+)\(.*\)( -> .*)?:\s*$", lines[index])
            if match is None:
                raise
            lines[index] = f"{match[1]}(*args, **kwargs){match[2] or ''}:"
    raise AssertionError("the TensorRT stubs do not become parseable")


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory) -> Path:
    pytest.importorskip("mypy")
    stubs = _stub_files()
    if not stubs:
        pytest.skip("tensorrt-stubs is not installed (requirements/no-deps.lock)")
    root = tmp_path_factory.mktemp("stubs")
    for stub in stubs:
        package = stub.parent.name
        (root / package).mkdir(exist_ok=True)
        (root / package / stub.name).write_text(_loosened(stub.read_text()))
    return root


def _mypy(stub_path: Path, tmp_path: Path, *targets: str) -> subprocess.CompletedProcess:
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    command = [sys.executable, "-m", "mypy", "--config-file", str(config)]
    command += ["--cache-dir", str(tmp_path / "cache"), "--no-error-summary", *targets]
    env = {"MYPYPATH": str(stub_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_tensorrt_calls_match_the_tensorrt_api(stub_path, tmp_path):
    # A copy with misspellings put in: the modules pass when the misspellings are all that
    # is reported, and the check is shown not to be vacuous in the same run.
    copy = tmp_path / "src" / "mobilesam_ros" / "core" / "backends" / "tensorrt"
    copy.mkdir(parents=True)
    for folder in (copy, *list(copy.parents)[:3]):
        (folder / "__init__.py").touch()
    for module in PACKAGE.glob("*.py"):
        text = module.read_text()
        for right, wrong in MISSPELLINGS.get(module.name, []):
            assert right in text, f"{module.name} no longer has {right!r}; update MISSPELLINGS"
            text = text.replace(right, wrong, 1)
        (copy / module.name).write_text(text)
    result = _mypy(stub_path, tmp_path, str(copy))
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    expected = ['"set_memory_pool_limits"', '"TF33"', '"execute_async_v4"']
    unexpected = [line for line in errors if not any(name in line for name in expected)]
    assert not unexpected, "\n".join(unexpected)
    for name in expected:
        assert any(name in line for line in errors), (name, result.stdout + result.stderr)


def cuda_calls(source: str) -> tuple[list[tuple[str, int, int]], list[tuple[str, ...]]]:
    """(name, argument count, line) of every `.call("cudaX", ...)` and the attribute paths
    read from the runtime module (`self.rt.X`, `self.rt.X.Y`) in Python source."""
    calls, attributes = [], []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "call"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            if any(isinstance(arg, ast.Starred) for arg in node.args[1:]):
                continue  # CudaApi.call itself forwards *args
            calls.append((node.args[0].value, len(node.args) - 1, node.lineno))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if node.value.attr == "rt":
                attributes.append((node.attr,))
            inner = node.value
            if isinstance(inner.value, ast.Attribute) and inner.value.attr == "rt":
                attributes.append((inner.attr, node.attr))
    return calls, attributes


def _problems(runtime, source: str) -> list[str]:
    calls, attributes = cuda_calls(source)
    problems = []
    for name, count, line in calls:
        function = getattr(runtime, name, None)
        if function is None:
            problems.append(f"line {line}: cuda runtime has no {name}")
            continue
        try:
            inspect.signature(function).bind(*range(count))
        except TypeError as error:
            problems.append(f"line {line}: {name} with {count} arguments: {error}")
    for path in attributes:
        target = runtime
        for part in path:
            target = getattr(target, part, None)
        if target is None:
            problems.append(f"cuda runtime has no {'.'.join(path)}")
    return problems


def test_cuda_calls_match_the_installed_cuda_python():
    """Against whichever cuda-python is installed: 13.x in the main environment, 12.2 and 12.9
    (the JetPack 6 extra's range) in `make test-cuda12`'s."""
    pytest.importorskip("cuda")
    # The module compat.import_cudart picks: cuda.bindings.runtime from 12.6, cuda.cudart before.
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    sources = {path.name: path.read_text() for path in PACKAGE.glob("*.py")}
    found = sum(len(cuda_calls(text)[0]) for text in sources.values())
    assert found >= 10  # the scan sees the backend's calls
    problems = [f"{name}: {p}" for name, text in sources.items() for p in _problems(runtime, text)]
    assert not problems, "\n".join(problems)
    # And it would see a misspelling or a wrong argument count.
    wrong = 'cuda.call("cudaMallok", 1)\ncuda.call("cudaMemcpyAsync", 1, 2)\nself.rt.cudaErr_t.x'
    assert len(_problems(runtime, wrong)) == 4  # cudaErr_t and cudaErr_t.x
