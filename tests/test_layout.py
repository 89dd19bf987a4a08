"""The package's layout: imports run one way, light corners stay light, the wheel ships
every module, the public paths work, and options cannot be swapped silently."""
from __future__ import annotations

import ast
import dataclasses
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "encodec_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set:
    """The package's modules that `name` imports anywhere (lazy imports in functions too),
    with the packages whose __init__ each import runs."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from package import module` imports the module; `from module import name` the module
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # a module's parent packages run first
                if ".".join(parts[:i]) in MODULES:
                    found.add(".".join(parts[:i]))
    found.discard(name)
    return found


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_in_a_cycle():
    graph = {name: imports(name) for name in MODULES}
    assert graph["encodec_cli.api"] >= {"encodec_cli.pipeline", "encodec_cli.outputs"}  # the parser sees imports
    assert "encodec_cli.entropy.lmcoder" in graph["encodec_cli.entropy.coders"]         # lazy ones too
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_stages_import_one_way():
    """formats and audio know nothing of the models; nothing below the facade imports it."""
    graph = {name: imports(name) for name in MODULES}

    def within(package: str) -> set:
        return {n for n in MODULES if n.startswith(f"encodec_cli.{package}")}

    for package, forbidden in (("formats", ("codec", "entropy", "jobs", "evaluation", "audio")),
                               ("audio", ("codec", "entropy", "formats", "jobs", "evaluation")),
                               ("codec", ("entropy", "formats", "jobs", "evaluation", "audio")),
                               ("entropy", ("jobs", "evaluation", "audio"))):
        for name in within(package):
            wrong = {t for t in graph[name] for f in forbidden if t.startswith(f"encodec_cli.{f}")}
            assert not wrong, f"{name} imports {wrong}"
    for name in MODULES:
        if name.startswith(("encodec_cli.formats", "encodec_cli.audio", "encodec_cli.codec",
                            "encodec_cli.entropy", "encodec_cli.pipeline")):
            assert "encodec_cli.api" not in graph[name], name


def test_subpackages_are_a_docstring_each():
    """An __init__ says what its package owns and imports nothing, so a light corner of the
    package (--help, info, raw read_codes) never loads torch through it."""
    inits = [p for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE]
    assert {p.parent.name for p in inits} == {"audio", "codec", "entropy", "formats", "jobs", "evaluation"}
    for init in inits:
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init
        assert len(body[0].value.value) > 40


def test_modules_stay_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= 450, max(sizes.items(), key=lambda kv: kv[1])
    assert sizes["encodec_cli.api"] <= 350


def test_light_corners_import_no_torch():
    code = ("import sys\n"
            "import encodec_cli.cli, encodec_cli.api, encodec_cli.jobs.plan, encodec_cli.formats.reader\n"
            "import encodec_cli.audio.files, encodec_cli.jobs.run, encodec_cli.outputs\n"
            "import encodec_cli.codes, encodec_cli.tokens, encodec_cli.shards, encodec_cli.jobs.shards\n"
            "assert 'pyarrow' not in sys.modules, 'pyarrow imported'\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


_A_LOOP_RUNS = ("import sys\n"
                "import numpy as np\n"
                "from encodec_cli.entropy import lmloops\n"
                "out, scales = np.zeros((2, 200), np.int8), np.empty(1)\n"
                "lmloops.norm_add(np.full((1, 200), 3 << 9, np.int64), np.full(200, 2048, np.int64),\n"
                "                 np.zeros(200, np.int64), np.ones((1, 200), np.int64), 8, out, scales)\n"
                "assert out.max() > 0\n")


def test_compiled_loops_load_without_scipy_linalg():
    """numba's check for scipy's BLAS runs without importing scipy.linalg (0.2 s, 27 MB);
    the loops still run, and scipy.linalg still imports afterwards."""
    pytest.importorskip("numba")
    pytest.importorskip("scipy")
    code = (_A_LOOP_RUNS +
            "assert 'scipy.linalg' not in sys.modules, 'scipy.linalg imported'\n"
            "import scipy.linalg\n"
            "assert scipy.linalg.cython_blas is not None\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_cached_loops_load_without_numbas_compiler(tmp_path):
    """A loop in numba's cache loads without numba refreshing its compiler (0.2 s: it would
    import numba.typed and the rest); a loop not in the cache still compiles, and both
    give their results."""
    pytest.importorskip("numba")
    code = (_A_LOOP_RUNS +
            "hits = sum(lmloops.norm_add.stats.cache_hits.values())\n"
            "print(hits, 'numba.typed.typedlist' in sys.modules)\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def run() -> str:
        return subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env,
                              capture_output=True, text=True).stdout.split()

    assert run() == ["0", "True"]   # compiled: numba's compiler, refreshed
    assert run() == ["1", "False"]  # from the cache: no refresh


def test_wheel_ships_every_module(tmp_path):
    """Built from the tree as pip builds it: a flat package list would drop the subpackages."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "tests",
                                                             "__pycache__", ".pytest_cache", ".hypothesis"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith("encodec_cli-")  # the distribution encodec-cli
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    assert shipped == {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert "encodec_cli/py.typed" in zipfile.ZipFile(wheel).namelist()  # PEP 561
    entry = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt"))
    assert "ecdc = encodec_cli.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_public_paths_keep_working():
    """What the README imports, at the paths it gives."""
    from encodec_cli.api import (  # noqa: F401
        Codes,
        CodesOptions,
        CompressOptions,
        ConvertOptions,
        DecompressOptions,
        codes_file,
        compress,
        compress_file,
        convert_file,
        decode,
        decompress,
        decompress_file,
        encode,
        encode_file,
        load_codes,
        read_codes,
    )
    from encodec_cli.cli import main
    from encodec_cli.evaluation import plot  # noqa: F401
    from encodec_cli.evaluation.report import EvalOptions, evaluate
    from encodec_cli.jobs.plan import plan
    from encodec_cli.jobs.run import run_batch

    assert callable(plan) and callable(run_batch) and callable(evaluate)
    assert dataclasses.is_dataclass(EvalOptions) and dataclasses.is_dataclass(Codes)
    (script,) = re.findall(r'^ecdc = "([\w.:]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    module, _, attr = script.partition(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is main


def test_options_and_records_take_keywords_only():
    """Fields of one type (weights, lm_weights; a header's rates and lengths) cannot swap."""
    from encodec_cli.evaluation.report import EvalOptions, Report, Row
    from encodec_cli.formats.records import Header, Packet
    from encodec_cli.formats.seek import Span
    from encodec_cli.jobs.task import FileResult
    from encodec_cli.options import CompressOptions, ConvertOptions, DecompressOptions

    for cls in (CompressOptions, DecompressOptions, ConvertOptions, EvalOptions, Header, Packet, Span,
                FileResult, Row, Report):
        fields = [f for f in dataclasses.fields(cls) if f.init]
        assert fields and all(f.kw_only for f in fields), cls.__name__
    with pytest.raises(TypeError):
        CompressOptions(6.0)  # type: ignore[misc]


def test_raw_fallback_switch(checkpoints):
    """The random LM predicts nothing: by default its packets are stored raw; with
    raw_fallback=False every one is range coded. Both decode to the same codes."""
    from encodec_cli import api
    from encodec_cli.formats import v1

    from .conftest import tone

    w, lw = checkpoints["encodec_24khz"], checkpoints["encodec_lm_24khz"]
    x = tone(8.5, 24000)  # two packets
    flags, codes = {}, {}
    for fallback in (True, False):
        data = api.compress(x, 24000, api.CompressOptions(bandwidth=1.5, weights=w, lm_weights=lw,
                                                          raw_fallback=fallback))
        flags[fallback] = [p.flags for p in v1.Reader.open(io.BytesIO(data))]
        codes[fallback] = api.read_codes(io.BytesIO(data), api.DecompressOptions(lm_weights=lw)).codes
    assert flags[True] == [v1.FLAG_RAW] * 2 and flags[False] == [0, 0]
    np.testing.assert_array_equal(codes[True], codes[False])
