"""Command lines of the evaluation/benchmark entry points (argparse): --help, unknown options and section names.

Nothing here runs an evaluation: what an evaluation would call first is replaced by a function that raises,
so a test fails at once (instead of running for minutes) if the command line does not stop it.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)


class Ran(Exception):
    """Raised by a stand-in for the evaluation's first heavy call: the command line let it start."""


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise Ran(args, kwargs)


# module -> (strings its --help must show: options, positionals, section names; what its evaluation calls first)
ENTRY_POINTS: dict[str, tuple[list[str], list[str]]] = {
    "vigil.evaluation.eval_afl": ([], ["data_root"]),
    "vigil.evaluation.eval_alarms": (["--max-records", "cinc", "cv", "tta", "tta-off"],
                                     ["load_tapes", "eval_time_to_alarm", "data_root"]),
    "vigil.evaluation.eval_ectopy": ([], ["data_root", "get_context"]),
    "vigil.evaluation.eval_qt": (["--lead", "{0,1,multi}", "--resample", "--no-stream", "--two-lead-stream",
                                  "--stream-rows", "--stream", "--no-baselines", "RECORD"], ["data_root", "load_record"]),
    "vigil.evaluation.eval_hrv": (["--no-baselines", "--workers", "RECORD"], ["data_root"]),
    "vigil.evaluation.eval_rhythm": (["--ref", "--leads", "--feed", "--tried", "--no-baselines", "afdb", "mitdb", "vfwin",
                                      "challenge", "noise"], ["data_root"]),
    "vigil.benchmarks.bench_alarms": (["--seconds"], ["cpu_load"]),
    "vigil.benchmarks.bench_store": (["seconds"], ["write_throughput", "data_root"]),
    "vigil.evaluation.__main__": (["afl", "alarms", "ectopy", "hrv", "qt", "rhythm", "qrs"], []),
    "vigil.benchmarks.__main__": (["alarms", "store", "signal"], []),
}


def _disarmed(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The module with its evaluation's first calls (and, for a runner, the section imports) raising `Ran`."""
    module = importlib.import_module(name)
    for attr in ENTRY_POINTS[name][1]:
        monkeypatch.setattr(module, attr, _boom)
    if name.endswith("__main__"):
        monkeypatch.setattr(module, "importlib", SimpleNamespace(import_module=_boom))
    if name.endswith("eval_rhythm"):
        for section in list(module.SECTIONS):
            monkeypatch.setitem(module.SECTIONS, section, _boom)
    return module


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_help_prints_usage_and_runs_nothing(name: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    module = _disarmed(name, monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    assert time.perf_counter() - t0 < 2.0
    out = capsys.readouterr().out
    prog = "python -m " + name.removesuffix(".__main__")
    assert out.startswith(f"usage: {prog} [-h]")
    for word in ENTRY_POINTS[name][0]:
        assert word in out, (name, word)
    doc_start = " ".join((module.__doc__ or "").split())[:40]
    assert doc_start in " ".join(out.split()), "description = the module docstring's first sentence"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_unknown_option_exits_2_naming_it(name: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    module = _disarmed(name, monkeypatch)
    with pytest.raises(SystemExit) as exc:
        module.main(["--no-such-option"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-option" in err


@pytest.mark.parametrize(("name", "argv", "named"), [
    ("vigil.evaluation.eval_rhythm", ["--lead", "1"], "--lead"),  # eval_qt's option name given to eval_rhythm
    ("vigil.evaluation.eval_rhythm", ["mitdb", "--lead=1"], "--lead=1"),
    ("vigil.evaluation.eval_qt", ["--leads", "1"], "--leads"),  # and eval_rhythm's to eval_qt
    ("vigil.evaluation.eval_alarms", ["cinc", "--max-record", "3"], "--max-record"),  # no abbreviations
    ("vigil.benchmarks.bench_alarms", ["--second", "3"], "--second"),
])
def test_typo_option_is_named_not_ignored(name: str, argv: list[str], named: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    module = _disarmed(name, monkeypatch)
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    assert exc.value.code == 2
    assert f"unrecognized arguments: {named}" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "argv", "message"), [
    ("vigil.evaluation.eval_qt", ["--lead", "2"], "argument --lead: invalid choice: '2'"),
    ("vigil.evaluation.eval_rhythm", ["--leads", "3"], "argument --leads: invalid choice: 3"),
    ("vigil.evaluation.eval_rhythm", ["mitbd"], "invalid choice: 'mitbd'"),
    ("vigil.evaluation.eval_alarms", ["cinq"], "invalid choice: 'cinq'"),
    ("vigil.evaluation.eval_alarms", ["--max-records", "x"], "argument --max-records: invalid int value: 'x'"),
    ("vigil.benchmarks.bench_store", ["x"], "argument seconds: invalid int value: 'x'"),
    ("vigil.benchmarks.bench_store", ["10", "20"], "unrecognized arguments: 20"),
    ("vigil.evaluation.eval_afl", ["201"], "unrecognized arguments: 201"),
])
def test_bad_values_exit_2(name: str, argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    module = _disarmed(name, monkeypatch)
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("package", "prefix", "bad"), [
    ("vigil.evaluation", "eval_", "qrt"),
    ("vigil.evaluation", "eval_", "eval_qrt"),
    ("vigil.benchmarks", "bench_", "stor"),
])
def test_runner_rejects_unknown_section_listing_valid_names(package: str, prefix: str, bad: str,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    runner = _disarmed(f"{package}.__main__", monkeypatch)
    pkg_dir = Path(importlib.import_module(package).__file__ or "").parent
    valid = sorted(p.stem.removeprefix(prefix) for p in pkg_dir.glob(f"{prefix}*.py"))
    with pytest.raises(SystemExit) as exc:
        runner.main(["qt" if package == "vigil.evaluation" else "store", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"invalid choice: '{bad.removeprefix(prefix)}'" in err
    for section in valid:
        assert f"'{section}'" in err


@pytest.mark.parametrize(("package", "argv", "expected"), [
    ("vigil.evaluation", ["rhythm", "eval_qt", "qt"], ["eval_qt", "eval_rhythm"]),  # module order, once each
    ("vigil.evaluation", [], None),  # every section
    ("vigil.benchmarks", ["bench_store", "alarms"], ["bench_alarms", "bench_store"]),
])
def test_runner_runs_the_named_sections_with_their_defaults(package: str, argv: list[str],
                                                            expected: list[str] | None,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    runner = importlib.import_module(f"{package}.__main__")
    calls: list[tuple[str, list[str]]] = []

    def fake_import(module: str) -> Any:
        short = module.rsplit(".", 1)[1]
        return SimpleNamespace(main=lambda a: calls.append((short, a)) or 0)

    monkeypatch.setattr(runner, "importlib", SimpleNamespace(import_module=fake_import))
    assert runner.main(argv) == 0
    pkg_dir = Path(importlib.import_module(package).__file__ or "").parent
    prefix = "eval_" if package == "vigil.evaluation" else "bench_"
    everything = sorted(p.stem for p in pkg_dir.glob(f"{prefix}*.py"))
    assert [c[0] for c in calls] == (expected if expected is not None else everything)
    assert all(a == [] for _, a in calls)
    assert "=== " + calls[0][0].removeprefix(prefix) + " ===" in capsys.readouterr().out


def test_eval_qt_options_and_records_in_any_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from vigil.evaluation import eval_qt

    streamed: list[tuple[Any, ...]] = []
    monkeypatch.setattr(eval_qt, "data_root", lambda: tmp_path)  # no qtdb files: only the stream tables run
    monkeypatch.setattr(eval_qt, "_stream_table", lambda *a, **k: streamed.append((a, k)))
    assert eval_qt.main(["sel100", "--lead", "0", "sel102", "--resample", "130", "--two-lead-stream"]) == 0
    assert capsys.readouterr().out.startswith("python -m vigil.evaluation.eval_qt --lead 0 --resample 130\n")
    folder = tmp_path / "qtdb"
    assert streamed == [((["sel100", "sel102"], folder), {"rate": 130.0}),
                        ((["sel100", "sel102"], folder, (0, 1)), {"rows": False, "rate": 130.0})]
    streamed.clear()
    assert eval_qt.main(["sel100", "--no-stream", "--stream"]) == 0
    assert streamed == []
    assert eval_qt.main([]) == 0  # the runner's call: every .q1c record (none here), lead multi
    assert capsys.readouterr().out.startswith("python -m vigil.evaluation.eval_qt --lead multi\n")
    assert streamed == [(([], folder), {"rate": None})]


def test_eval_rhythm_sets_the_module_globals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from vigil.evaluation import eval_rhythm as r

    for attr, value in (("FORCE_REFERENCE", False), ("MITDB_LEADS", 2), ("VFWIN_FEED_S", 1.0),
                        ("VFWIN_TRIED", False)):
        monkeypatch.setattr(r, attr, value)  # restored after the test
    ran: list[str] = []
    for section in list(r.SECTIONS):
        monkeypatch.setitem(r.SECTIONS, section, lambda s=section: ran.append(s))
    monkeypatch.setattr(r, "data_root", lambda: tmp_path)
    assert r.main(["vfwin", "--feed", "0.25", "mitdb", "--leads", "1", "--tried", "--ref"]) == 0
    assert ran == ["vfwin", "mitdb"]
    assert (r.FORCE_REFERENCE, r.MITDB_LEADS, r.VFWIN_FEED_S, r.VFWIN_TRIED) == (True, 1, 0.25, True)
    assert capsys.readouterr().out == ("python -m vigil.evaluation.eval_rhythm vfwin mitdb --ref --leads 1 "
                                       "--feed 0.25 --tried\n")
    monkeypatch.setattr(r, "MITDB_LEADS", 2)
    monkeypatch.setattr(r, "VFWIN_FEED_S", 1.0)
    ran.clear()
    assert r.main([]) == 0
    assert ran == list(r.SECTIONS)
    assert (r.FORCE_REFERENCE, r.MITDB_LEADS, r.VFWIN_FEED_S, r.VFWIN_TRIED) == (False, 2, 1.0, False)


def test_eval_alarms_sections_and_max_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from vigil.evaluation import eval_alarms as a

    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(a, "load_tapes", lambda n: calls.append(("tapes", n)) or ["tape"])
    monkeypatch.setattr(a, "eval_cinc", lambda tapes: calls.append(("cinc", tapes)) or 0)
    monkeypatch.setattr(a, "eval_cv", lambda tapes: calls.append(("cv", tapes)) or 0)
    monkeypatch.setattr(a, "eval_time_to_alarm", lambda n, spectral: calls.append(("tta", (n, spectral))) or 0)
    assert a.main(["tta-off", "--max-records", "3", "cinc"]) == 0
    assert calls == [("tapes", 3), ("cinc", ["tape"]), ("tta", (3, False))]
    calls.clear()
    assert a.main([]) == 0
    assert calls == [("tapes", None), ("cinc", ["tape"]), ("cv", ["tape"]), ("tta", (None, True))]


@pytest.mark.parametrize(("name", "attr", "argv", "expected"), [
    ("vigil.benchmarks.bench_alarms", "cpu_load", ["--seconds", "5"], (5,)),
    ("vigil.benchmarks.bench_alarms", "cpu_load", [], (600,)),
    ("vigil.benchmarks.bench_store", "write_throughput", ["5"], 5),
    ("vigil.benchmarks.bench_store", "write_throughput", [], 60),
])
def test_bench_seconds(name: str, attr: str, argv: list[str], expected: Any,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    module = _disarmed(name, monkeypatch)
    with pytest.raises(Ran) as exc:
        module.main(argv)
    args = exc.value.args[0]
    assert (args if isinstance(expected, tuple) else args[0]) == expected, attr


@pytest.mark.parametrize("name", ["vigil.evaluation.eval_afl", "vigil.evaluation.eval_ectopy"])
def test_no_option_sections_still_run_with_no_arguments(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _disarmed(name, monkeypatch)
    with pytest.raises(Ran):
        module.main([])
