"""config.toml schema, key/line mapping, `vigil check-config`, and secret files."""

from __future__ import annotations

import json
import textwrap
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from vigil import config as C
from vigil.cli import main
from vigil.commands.check_config import check
from vigil.errors import ConfigError, SecretError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.toml"

BASE = textwrap.dedent("""\
    [site]
    name = "Test site"
    room = "room-1"

    [[devices]]
    id = "d1"
    profile = "replay-wfdb"
    record = "rec/119"

    [[devices]]
    id = "d2"
    profile = "replay-wfdb"
    record = "rec/203"

    [[guests]]
    mat = "A1"
    name = "Guest one"
    devices = ["d1"]
    """)


def _problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as ei:
        C.parse_config(text)
    return ei.value.problems


def _marker_line(text: str) -> int:
    """1-based line of the `# <-` marker that a broken config uses to point at the bad key."""
    hits = [n for n, ln in enumerate(text.splitlines(), 1) if ln.rstrip().endswith("# <-")]
    assert len(hits) == 1, "each broken config marks exactly one line"
    return hits[0]


# --------------------------------------------------------------------------- key_lines

def test_key_lines_maps_tables_arrays_nested_dotted_inline() -> None:
    text = textwrap.dedent('''\
        # comment with [[guests]] in it
        title = "a # not a comment"
        multi = """
        [[guests]]
        x = 1
        """
        [site]
        name = 'x'
        "quoted key" = 1
        [[guests]]
        mat = "A1"
        devices = [
          "d1", # c
          "d2",
        ]
        [guests.thresholds]
        hr.warning_low = 45
        spo2 = { warning_low = 88, critical_low = 80 }
        [[guests]]
        mat = "A2"
        thresholds = { hr = { warning_high = 110 } }
        [[guests.extra]]
        k = 1
        [[guests.extra]]
        k = 2
        [escalation]
        contacts = [
          { name = "a", phone = "+15555550101" },
          { name = "b" },
        ]
        [alarms.conditions."hr_low"]
        delay_s = 3
        ''')
    lines = C.key_lines(text)
    expected = {
        ("title",): 2, ("multi",): 3, ("site",): 7, ("site", "name"): 8, ("site", "quoted key"): 9,
        ("guests",): 10, ("guests", 0): 10, ("guests", 0, "mat"): 11, ("guests", 0, "devices", 0): 13,
        ("guests", 0, "devices", 1): 14, ("guests", 0, "thresholds"): 16,
        ("guests", 0, "thresholds", "hr", "warning_low"): 17,
        ("guests", 0, "thresholds", "spo2", "critical_low"): 18,
        ("guests", 1): 19, ("guests", 1, "mat"): 20, ("guests", 1, "thresholds", "hr", "warning_high"): 21,
        ("guests", 1, "extra", 0, "k"): 23, ("guests", 1, "extra", 1, "k"): 25,
        ("escalation", "contacts", 0, "phone"): 28, ("escalation", "contacts", 1, "name"): 29,
        ("alarms", "conditions", "hr_low", "delay_s"): 32,
    }
    for loc, line in expected.items():
        assert lines.get(loc) == line, (loc, lines.get(loc), line)
    # nothing from inside the multi-line string or the comment leaked in
    assert ("x",) not in lines and ("guests", 2) not in lines


def test_loc_round_trip() -> None:
    loc = ("guests", 1, "thresholds", "hr", "warning_low")
    assert C._format_loc(loc) == "guests[1].thresholds.hr.warning_low"
    assert C.parse_loc("guests[1].thresholds.hr.warning_low") == loc
    assert C.parse_loc("escalation.contacts[0]") == ("escalation", "contacts", 0)


# --------------------------------------------------------------------------- broken configs

BROKEN: dict[str, tuple[str, str, str]] = {
    # name: (text appended to BASE with a `# <-` marker on the bad line, expected key, message fragment)
    "unknown key in guest": ('colour = "red"  # <-\n', "guests[0].colour", "unknown key 'colour'"),
    "typo in table": ('[mqtt]\nhots = "10.0.0.1"  # <-\n', "mqtt.hots", "did you mean 'host'"),
    "inline mqtt password": ('[mqtt]\nusername = "u"\npassword = "hunter2"  # <-\n', "mqtt.password",
                             "secrets go in files: use password_file"),
    "inline booking secret": ('[sync.booking]\nurl = "https://x"\nsecret_file = "b"\nsecret = "s"  # <-\n',
                              "sync.booking.secret", "use secret_file"),
    "inline twilio token": ('[escalation.twilio]\naccount_sid = "AC1"\nfrom_number = "+15555550100"\n'
                            'auth_token_file = "t"\nauth_token = "x"  # <-\n',
                            "escalation.twilio.auth_token", "use auth_token_file"),
    "inline secret where none belongs": ('[store]\napi_key = "k"  # <-\n', "store.api_key", "secrets go in files"),
    "wrong type": ('[mqtt]\nport = "1883"  # <-\n', "mqtt.port", "valid integer (got string '1883')"),
    "wrong type in 2nd guest": ('[[guests]]\nmat = "A2"\nname = "Two"\nbaseline_qtc_ms = "long"  # <-\n',
                                "guests[1].baseline_qtc_ms", "valid number"),
    "missing key in 2nd guest": ('[[guests]]  # <-\nmat = "A2"\n', "guests[1].name", "required key is missing"),
    "bool for float": ('[alarms]\naudio_pause_s = true  # <-\n', "alarms.audio_pause_s", "valid number"),
    "guest warning beyond critical": ('[[guests]]\nmat = "A2"\nname = "Two"\n[guests.thresholds.hr]\n'
                                      'warning_low = 30  # <-\n',
                                      "guests[1].thresholds.hr.warning_low", "critical_low (40)"),
    "guest dotted key": ('[[guests]]\nmat = "A2"\nname = "Two"\n[guests.thresholds]\n'
                         'hr.warning_high = 150  # <-\n', "guests[1].thresholds.hr.warning_high", "critical_high (120)"),
    "guest inline table": ('[[guests]]\nmat = "A2"\nname = "Two"\n'
                           'thresholds = { spo2 = { warning_low = 80 } }  # <-\n',
                           "guests[1].thresholds.spo2.warning_low", "critical_low (85)"),
    "guest low above high": ('[[guests]]\nmat = "A2"\nname = "Two"\n[guests.thresholds.sbp]\n'
                             'warning_low = 140  # <-\nwarning_high = 120\n',
                             "guests[1].thresholds.sbp.warning_low", "warning_low (140) must be below warning_high (120)"),
    "global low above high": ('[alarms.thresholds.sbp]\nwarning_low = 160  # <-\n',
                              "alarms.thresholds.sbp.warning_low", "warning_low (160) must be below warning_high (150)"),
    "global critical inside warning": ('[alarms.thresholds.hr]\ncritical_high = 90  # <-\n',
                                       "alarms.thresholds.hr.critical_high", "warning_high (100) is above critical_high (90)"),
    "unknown device in multi-line array": ('[[guests]]\nmat = "A2"\nname = "Two"\ndevices = [\n  "d2",\n'
                                           '  "d9",  # <-\n]\n', "guests[1].devices[1]", "unknown device 'd9'"),
    "device on two mats": ('[[guests]]\nmat = "A2"\nname = "Two"\ndevices = ["d1"]  # <-\n',
                           "guests[1].devices[0]", "already assigned to guests[0]"),
    "duplicate mat": ('[[guests]]\nmat = "A1"  # <-\nname = "Two"\n', "guests[1].mat", "already used by guests[0]"),
    "phone not E.164": ('[[escalation.contacts]]\nname = "n"\nphone = "0044 20 7946 0000"  # <-\n',
                        "escalation.contacts[0].phone", "E.164"),
    "ladder backup before on-call": ('[escalation.high]\non_call_after_s = 60\nbackup_after_s = 30  # <-\n',
                                     "escalation.high.backup_after_s", "must not be before on_call_after_s"),
    "replay without record": ('[[devices]]  # <-\nid = "d3"\nprofile = "replay-wfdb"\n',
                              "devices[2].record", "needs `record`"),
    "bad priority literal": ('[alarms.conditions.af]\npriority = "urgent"  # <-\n',
                             "alarms.conditions.af.priority", "'high', 'medium' or 'low'"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_config_names_key_and_line(name: str) -> None:
    extra, key, fragment = BROKEN[name]
    text = BASE + "\n" + extra
    problems = _problems(text)
    match = [p for p in problems if p[0] == key]
    assert match, f"{key} not reported; got {problems}"
    _, line, msg = match[0]
    assert line == _marker_line(text), (problems, text)
    assert fragment in msg


def test_toml_syntax_error_has_line() -> None:
    text = BASE + '\n[mqtt]\nport = 18 83\n'
    (key, line, msg), = _problems(text)
    assert key == "(syntax)"
    assert line == len(text.splitlines())
    assert "not valid TOML" in msg


def test_every_error_reported_at_once() -> None:
    text = 'colour = 1\n' + BASE + '[guests.thresholds.hr]\nwarning_high = 130\n[mqtt]\nport = "x"\npassword = "p"\n'
    keys = [p[0] for p in _problems(text)]
    assert keys == ["colour", "guests[0].thresholds.hr.warning_high", "mqtt.port", "mqtt.password"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        C.load_config(tmp_path / "nope.toml")
    assert ei.value.problems[0][0] == "(file)"
    assert "not found" in ei.value.problems[0][2]


def test_strict_types_but_int_for_float() -> None:
    cfg = C.parse_config(BASE + "\n[alarms]\naudio_pause_s = 60\n")
    assert cfg.alarms.audio_pause_s == 60.0
    assert any(p[0] == "alarms.thresholds.hr.warning_low"
               for p in _problems(BASE + '\n[alarms.thresholds.hr]\nwarning_low = "45"\n'))


# --------------------------------------------------------------------------- thresholds

def test_thresholds_merge_per_guest() -> None:
    text = BASE + textwrap.dedent("""
        [alarms.thresholds.hr]
        warning_high = 110          # partial global override: the other keys keep the seed

        [[guests]]
        mat = "A2"
        name = "Two"
        devices = ["d2"]
        [guests.thresholds]
        qtc_rise_ms = 40
        [guests.thresholds.hr]
        warning_low = 45
        critical_low = 35
        """)
    cfg = C.parse_config(text)
    g1, g2 = cfg.thresholds_for("A1"), cfg.thresholds_for("A2")
    assert (g1.hr.warning_low, g1.hr.warning_high, g1.hr.critical_low, g1.hr.critical_high) == (50, 110, 40, 120)
    assert (g2.hr.warning_low, g2.hr.warning_high, g2.hr.critical_low, g2.hr.critical_high) == (45, 110, 35, 120)
    assert g1.qtc_rise_ms == 60 and g2.qtc_rise_ms == 40
    assert g2.sbp == g1.sbp and (g2.spo2.warning_low, g2.spo2.critical_low) == (90, 85)
    assert cfg.thresholds_for("nobody") == g1


def test_seed_table_defaults() -> None:
    t = C.parse_config(BASE).alarms.thresholds
    assert (t.hr.warning_low, t.hr.warning_high, t.hr.critical_low, t.hr.critical_high) == (50, 100, 40, 120)
    assert (t.qtc.warning_high, t.qtc.critical_high) == (450, 500)
    assert (t.sbp.warning_low, t.sbp.warning_high, t.sbp.critical_low, t.sbp.critical_high) == (90, 150, 80, 180)
    assert (t.spo2.warning_low, t.spo2.critical_low) == (90, 85)


# --------------------------------------------------------------------------- the example

def test_example_config_validates() -> None:
    cfg = C.load_config(EXAMPLE)
    assert cfg.site.room == "ceremony-1"
    assert len(cfg.guests) == 4 and len(cfg.devices) == 4
    assert all(g.devices and g.baseline_qtc_ms for g in cfg.guests)
    assert any(g.thresholds for g in cfg.guests)
    assert (cfg.escalation.high.on_call_after_s, cfg.escalation.high.backup_after_s) == (30, 90)
    assert (cfg.escalation.medium.on_call_after_s, cfg.escalation.medium.backup_after_s) == (120, 300)
    assert cfg.escalation.twilio and cfg.escalation.modem and cfg.sync.booking and cfg.sync.fhir and cfg.sync.sendgrid
    for d in cfg.devices:  # every replayed record is vendored in the repository
        p = cfg.resolve_path(d.record or "")
        assert Path(f"{p}.hea").is_file() or Path(f"{p}_Signals.csv").is_file(), p


def test_example_passes_check_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    res = check(EXAMPLE)
    assert res.errors == []
    assert res.summary == {"site": "Example Retreat Centre", "room": "ceremony-1", "guests": 4, "devices": 4,
                           "operators": 2, "contacts": 3}
    # only missing secret files are warned about (they are not in the repository)
    assert res.warnings and all("not found yet" in m and k.endswith("_file") for k, _, m in res.warnings)


def test_commented_device_examples_validate() -> None:
    """The commented BLE/serial/simulated examples in config.toml are valid when uncommented."""
    text = EXAMPLE.read_text()
    start = text.index("# [[devices]]\n# id = \"h10-a1\"")
    block = text[start:text.index("# ----", start)]
    uncommented = "\n".join(ln[2:] if ln.startswith("# ") else ("" if ln == "#" else ln) for ln in block.splitlines())
    cfg = C.parse_config(text + "\n" + uncommented)
    assert {d.profile for d in cfg.devices} >= {"polar-h10", "generic-blood-pressure", "contec-cms50d-plus",
                                                "simulated-ecg"}


# --------------------------------------------------------------------------- check-config CLI

def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_cli_prints_each_error_with_file_line_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = BASE + '\n[[guests]]\nmat = "A2"\nname = "Two"\n[guests.thresholds.hr]\nwarning_low = 30\n[mqtt]\npassword = "x"\n'
    p = _write(tmp_path, text)
    assert main(["check-config", str(p)]) == 2
    out = capsys.readouterr().out.splitlines()
    n = len(text.splitlines())
    assert f"{p}:{n - 2}: guests[1].thresholds.hr.warning_low: " in out[0]
    assert out[1].startswith(f"{p}:{n}: mqtt.password: unknown key 'password': secrets go in files: use password_file")
    assert out[-1] == f"{p}: 2 error(s)"


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _write(tmp_path, BASE + '\n[mqtt]\nport = 0\n')
    assert main(["check-config", "--json", str(p)]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["errors"] == [{"key": "mqtt.port", "line": len(BASE.splitlines()) + 3,
                              "message": "Input should be greater than 0 (got integer 0)"}]


def test_cli_ok_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rec").mkdir()
    for r in ("119", "203"):
        (tmp_path / "rec" / f"{r}.hea").write_text("x")
    p = _write(tmp_path, BASE)
    assert main(["check-config", str(p)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"{p}: OK: site 'Test site', room 'room-1', 1 guests, 2 devices")
    assert main(["check-config", "--json", str(p)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["errors"] == [] and doc["summary"]["guests"] == 1


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().out


def test_check_config_unknown_profile_condition_and_missing_record(tmp_path: Path) -> None:
    text = BASE.replace('profile = "replay-wfdb"\nrecord = "rec/203"', 'profile = "polar-h11"') + \
        "\n[alarms.conditions.hr_hgih]\ndelay_s = 3\n"
    res = check(_write(tmp_path, text))
    errs = {k: (ln, m) for k, ln, m in res.errors}
    lines = text.splitlines()
    assert errs["devices[1].profile"][0] == lines.index('profile = "polar-h11"') + 1
    assert "unknown firmware profile 'polar-h11'" in errs["devices[1].profile"][1]
    assert errs["alarms.conditions.hr_hgih"][0] == lines.index("[alarms.conditions.hr_hgih]") + 1
    warns = {k: m for k, _, m in res.warnings}
    assert "record not found" in warns["devices[0].record"]


# --------------------------------------------------------------------------- secrets

def _secret_cfg(tmp_path: Path) -> C.VigilConfig:
    text = BASE.replace("[[devices]]", '[mqtt]\nusername = "u"\npassword_file = "mqtt.pw"\n\n[[devices]]', 1)
    return C.parse_config(text, _write(tmp_path, text))


def test_read_secret_relative_to_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = _secret_cfg(tmp_path)
    pw = tmp_path / "mqtt.pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o600)
    assert C.read_secret(cfg, "mqtt.pw", what="mqtt password") == b"s3cret"


def test_read_secret_refuses_open_permissions_with_exact_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = _secret_cfg(tmp_path)
    pw = tmp_path / "mqtt.pw"
    pw.write_text("s3cret")
    for mode in (0o644, 0o640, 0o604, 0o660):
        pw.chmod(mode)
        with pytest.raises(SecretError) as ei:
            C.read_secret(cfg, "mqtt.pw", what="mqtt password")
        assert str(ei.value).endswith(f"run: chmod 600 {pw}")
        assert f"mode {mode:04o}" in str(ei.value)
    pw.chmod(0o400)
    assert C.read_secret(cfg, "mqtt.pw", what="mqtt password") == b"s3cret"


def test_read_secret_prefers_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _secret_cfg(tmp_path)
    (tmp_path / "mqtt.pw").write_text("next-to-config")
    (tmp_path / "mqtt.pw").chmod(0o600)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt.pw").write_text("from-systemd")
    (creds / "mqtt.pw").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert C.read_secret(cfg, "mqtt.pw", what="mqtt password") == b"from-systemd"
    (creds / "mqtt.pw").unlink()  # falls back to the config's folder
    assert C.read_secret(cfg, "mqtt.pw", what="mqtt password") == b"next-to-config"


def test_read_secret_not_found_lists_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = _secret_cfg(tmp_path)
    with pytest.raises(SecretError) as ei:
        C.read_secret(cfg, "mqtt.pw", what="mqtt password")
    assert str(creds / "mqtt.pw") in str(ei.value) and str(tmp_path / "mqtt.pw") in str(ei.value)


def test_check_config_secret_missing_warns_open_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = _secret_cfg(tmp_path)
    assert cfg.source_path is not None
    path = cfg.source_path
    (tmp_path / "rec").mkdir()
    for r in ("119", "203"):
        (tmp_path / "rec" / f"{r}.hea").write_text("x")
    line = path.read_text().splitlines().index('password_file = "mqtt.pw"') + 1
    assert main(["check-config", str(path)]) == 0  # missing secret: a warning only
    out = capsys.readouterr().out
    assert f"{path}:{line}: mqtt.password_file: warning: file 'mqtt.pw' not found yet" in out
    pw = tmp_path / "mqtt.pw"
    pw.write_text("x")
    pw.chmod(0o644)
    assert main(["check-config", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"{path}:{line}: mqtt.password_file: secret file {pw} is accessible by group/others (mode 0644); " \
           f"run: chmod 600 {pw}" in out
    pw.chmod(0o600)
    assert main(["check-config", str(path)]) == 0


def _all_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    if model in seen:
        return seen
    seen.add(model)
    for f in model.model_fields.values():
        for sub in C._unwrap_models(f.annotation):
            _all_models(sub, seen)
    return seen


def test_every_secret_field_ends_in_file() -> None:
    models = _all_models(C.VigilConfig, set())
    assert C.TwilioSettings in models and C.SendgridSettings in models
    secretish = [(m.__name__, name) for m in models for name in m.model_fields
                 if C.looks_secret(name)]
    assert secretish == []
    # and each secret file field is typed as a plain file name (str), never bytes/SecretStr values
    for m in models:
        for name, f in m.model_fields.items():
            if name.endswith("_file"):
                assert set(typing.get_args(f.annotation) or (f.annotation,)) <= {str, type(None)}, (m, name)


def test_secret_files_lists_every_file_key() -> None:
    cfg = C.load_config(EXAMPLE)
    keys = {k: (f, s) for k, f, s in C.secret_files(cfg)}
    assert keys["mqtt.password_file"] == ("mqtt-daemon.password", True)
    assert keys["operators[1].secret_file"] == ("operator-assistant.secret", True)
    assert {"store.key_file", "escalation.twilio.auth_token_file", "sync.booking.secret_file",
            "sync.fhir.client_secret_file", "sync.sendgrid.api_key_file"} <= set(keys)


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        C.load_config(tmp_path)
    assert ei.value.problems == [("(file)", None, "is a directory")]


def test_thresholds_survive_a_dump_and_revalidate_round_trip() -> None:
    """Tools rebuild configs from model_dump() (None for keys not given): a guest keeps the global limits."""
    cfg = C.load_config(EXAMPLE)
    again = C.VigilConfig.model_validate(cfg.model_dump(exclude={"source_path"}))
    for g in cfg.guests:
        assert again.thresholds_for(g.mat) == cfg.thresholds_for(g.mat)
    hr = again.thresholds_for("A2").hr
    assert (hr.warning_low, hr.warning_high, hr.critical_low, hr.critical_high) == (50, 110, 40, 130)
