"""Every development task of the neox monorepo.

nox -s tests          each package's tests in a venv holding only that package and its
                      dependencies, then the cross-package tests in tests/
nox -s lint           ruff (lint + format check) and mypy
nox -s demo           the end-to-end CPU demo (neox demo)
nox -s bench          benchmarks/: speed ratios against a reference in the same run
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PYTHON = "3.11"
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))

nox.options.sessions = ["lint", "tests"]

# package -> the local packages its venv holds (dependencies first) and what it needs first
PACKAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "neox-data": (("neox-data[test,all]",), ()),
    "neox-launch": (("neox-launch[test]",), ()),
    "neox-model": (("neox-model[test]",), ("torch",)),
    "neox-convert": (("neox-model", "neox-convert[test]"), ("torch",)),
    "neox-eval": (("neox-data", "neox-model", "neox-eval[test]"), ("torch",)),
    "neox-train": (("neox-data", "neox-model", "neox-train[test]"), ("torch", "deepspeed")),
    "neox-testing": (("neox-model", "neox-testing[test]"), ("torch",)),
}
ALL_PACKAGES = (
    "neox-data",
    "neox-model",
    "neox-launch",
    "neox-train",
    "neox-convert",
    "neox-eval[test]",
    "neox[test]",
)


def install_heavy(session: nox.Session, needs: tuple[str, ...]) -> None:
    """torch from the pinned CPU wheel; DeepSpeed built against it (no build isolation)."""
    if "torch" in needs or "deepspeed" in needs:
        session.install(*CONSTRAINTS, "torch")
    if "deepspeed" in needs:
        session.install(*CONSTRAINTS, "setuptools", "wheel", "packaging", "ninja", "py-cpuinfo")
        session.install(*CONSTRAINTS, "--no-build-isolation", "deepspeed")


def install_local(session: nox.Session, packages: tuple[str, ...]) -> None:
    """The local packages `packages` (names with extras) in one pip command. A `[test]` extra
    needs neox-testing, which is not on PyPI: its folder goes along."""
    names = [spec.partition("[")[0] for spec in packages]
    tested = any("test" in spec.partition("[")[2].rstrip("]").split(",") for spec in packages)
    if tested and "neox-testing" not in names:
        packages = ("neox-testing", *packages)
    paths = []
    for spec in packages:
        name, _, extras = spec.partition("[")
        paths.append(f"{ROOT / 'packages' / name}" + (f"[{extras}" if extras else ""))
    session.install(*CONSTRAINTS, *paths)


def test_env(session: nox.Session) -> None:
    session.env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )


@nox.session(python=PYTHON)
@nox.parametrize("package", [*PACKAGES, "e2e"])
def tests(session: nox.Session, package: str) -> None:
    """One package's tests in its own venv; "e2e" is the meta-package and tests/ together."""
    test_env(session)
    if package == "e2e":
        install_heavy(session, ("torch", "deepspeed"))
        install_local(session, ALL_PACKAGES)
        paths = ["packages/neox/tests", "tests"]
    else:
        local, heavy = PACKAGES[package]
        install_heavy(session, heavy)
        install_local(session, local)
        paths = [f"packages/{package}/tests"]
    # the slowest tests in every log, to keep CI within its time
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "--durations=25", *paths, *session.posargs
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff", "mypy", "types-PyYAML", "numpy")
    session.run("ruff", "check", "packages", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "packages", "tests", "benchmarks", "noxfile.py")
    sources = sorted((ROOT / "packages").glob("*/src"))
    modules = [p.name for src in sources for p in src.iterdir() if (p / "__init__.py").is_file()]
    session.env["MYPYPATH"] = ":".join(map(str, sources))
    session.run("mypy", "--ignore-missing-imports", *(f"-p{m}" for m in modules))


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Train a small model on CPU from the standard library's sources, export it, check it."""
    test_env(session)
    install_heavy(session, ("torch", "deepspeed"))
    install_local(session, ALL_PACKAGES)
    workdir = Path(session.create_tmp()) / "demo_run"
    session.run("neox", "demo", "--workdir", str(workdir), *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks print ratios against a reference measured in the same run. Megatron-Core
    (its index helpers are bench_data_index's reference) goes in without its dependencies, which
    are GPU libraries the helpers do not use; where its wheel does not install, bench_data_index
    names its fallback reference instead."""
    install_heavy(session, ("torch", "deepspeed"))
    install_local(session, ("neox-data[all]", *ALL_PACKAGES[1:]))  # all: the tiktoken engine
    session.run(
        "python",
        "-m",
        "pip",
        "install",
        "--no-deps",
        *CONSTRAINTS,
        "megatron-core",
        success_codes=[0, 1],
    )
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
