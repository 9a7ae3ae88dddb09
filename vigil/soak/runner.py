"""Run a soak night: real daemon, sync, mosquitto, booking platform and oximeters, with injected faults."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vigil.commands.run import TEST_HCI_ENV
from vigil.datasets import VENDORED_RECORDS
from vigil.soak.ble import BleRadio
from vigil.soak.faults import Fault, schedule
from vigil.soak.report import FaultRun, Incarnation, SoakReport, analyse, save_inputs

log = logging.getLogger(__name__)

RECORDS = [("119", "replay-wfdb", ""), ("203", "replay-wfdb", ""), ("v221l", "replay-wfdb", "start_s = 240\n"),
           ("bidmc_04", "replay-bidmc", "")]
OX_SPO2 = 82            # below the critical low limit (85): every oximeter guest must alarm
MIN_FREE_MB = 24
COMMIT_INTERVAL_S = 1.0
SECRET = b"soak-booking-secret"


@dataclass
class SoakOptions:
    """Parameters of one night."""

    hours: float = 12.0
    speed: float = 10.0
    guests: int = 20
    serial: int = 2
    ble: int = 2                       # guests that also wear a BLE pulse oximeter (through the daemon's BLE path)
    seed: int = 1
    kill_every_min: float = 10.0       # simulated minutes between daemon SIGKILLs (mean)
    run_dir: Path = Path("run/soak")
    tmpfs_mb: int = 0                  # store on a tmpfs this big (root only; 0 = auto: root -> sized, else off)
    kinds: frozenset[str] | None = None
    keep: bool = False
    drain_timeout_s: float = 180.0     # after the night, how long `vigil sync` may take to empty the outbox


@dataclass
class Proc:
    """A restartable child process (daemon or sync) with its incarnations."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    incs: list[Incarnation] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    _log: IO[bytes] | None = None
    _ps: Any = None

    def start(self) -> None:
        """Start a new incarnation."""
        n = len(self.incs) + 1
        self._log = (self.log_dir / f"{self.name}-{n}.log").open("wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "VIGIL_LOG_LEVEL": "INFO", **self.env}, start_new_session=True)
        self.incs.append(Incarnation(n, self.proc.pid, time.monotonic()))
        self.restart_at = None
        self._ps = None

    @property
    def current(self) -> Incarnation | None:
        """The running incarnation, if any."""
        return self.incs[-1] if self.incs and self.incs[-1].end is None else None

    def sample(self) -> None:
        """Record RSS, open file descriptors and CPU of the running incarnation."""
        inc = self.current
        if inc is None or self.proc is None:
            return
        import psutil

        try:
            if self._ps is None:
                self._ps = psutil.Process(self.proc.pid)
            mem = self._ps.memory_info().rss / 2**20
            cpu = self._ps.cpu_times()
            now = time.monotonic()
            inc.rss.append((now, mem))
            inc.fds.append((now, self._ps.num_fds()))
            inc.cpu_s = cpu.user + cpu.system
        except (psutil.Error, OSError):
            pass

    def _ended(self, how: str, offset: float) -> None:
        inc = self.current
        if inc is not None:
            inc.end, inc.how, inc.offset_end = time.monotonic(), how, offset
            inc.exit_code = self.proc.returncode if self.proc else None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self, restart_after_s: float, offset: float) -> bool:
        """SIGKILL now, restart after a pause; False when it was not running."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.sample()
        self.proc.kill()
        self.proc.wait(10)
        self._ended("killed", offset)
        self.restart_at = time.monotonic() + restart_after_s
        return True

    def poll(self, offset: float) -> None:
        """Notice a death we did not cause (restart after 1 s, as systemd would) and due restarts."""
        if self.proc is not None and self.current is not None and self.proc.poll() is not None:
            log.warning("%s exited on its own with status %s", self.name, self.proc.returncode)
            self._ended("crashed", offset)
            self.restart_at = time.monotonic() + 1.0
        if self.restart_at is not None and time.monotonic() >= self.restart_at:
            self.start()

    def stop(self, offset: float, timeout: float = 30.0) -> None:
        """SIGTERM and wait (SIGKILL after `timeout`)."""
        self.restart_at = None
        if self.proc is None or self.proc.poll() is not None:
            if self.current is not None:
                self._ended("crashed", offset)
            return
        self.sample()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            self._ended("stopped", offset)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            self._ended("killed", offset)


def ble_guests(guests: int, serial: int, ble: int) -> list[int]:
    """Indices of the guests that wear a BLE oximeter: after the serial ones, not on a BIDMC replay (its own SpO2)."""
    out = [i for i in range(serial, guests) if RECORDS[i % len(RECORDS)][1] != "replay-bidmc"]
    return out[:ble]


def write_config(path: Path, *, store: Path, port: int, booking_url: str, guests: int, ox_links: list[Path],
                 speed: float, ble_addresses: list[str] | None = None
                 ) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """The night's config.toml; returns (mats, serial oximeter mats, their device ids, BLE mats, BLE device ids).

    BLE oximeters are ``ble-Mxx`` devices (profile generic-pulse-oximeter) on the guests `ble_guests` picks.
    """
    text = (f'[site]\nname = "soak"\nroom = "soak"\n[store]\npath = "{store}"\nmin_free_mb = {MIN_FREE_MB}\n'
            f"commit_interval_s = {COMMIT_INTERVAL_S}\n[mqtt]\nport = {port}\n"
            "[alarms]\nsound_enabled = false\n"
            f'[sync]\nmax_backoff_s = 5\n[sync.booking]\nurl = "{booking_url}/v1/events"\nsecret_file = "booking.secret"\n')
    mats, ox_mats, ox_ids, ble_mats, ble_ids = [], [], [], [], []
    devices, guest_tables = "", ""
    ble_at = dict(zip(ble_guests(guests, len(ox_links), len(ble_addresses or [])), ble_addresses or [], strict=False))
    for i in range(guests):
        rec, profile, extra = RECORDS[i % len(RECORDS)]
        mat = f"M{i + 1:02d}"
        devs = [f"rep-{mat}"]
        devices += (f'[[devices]]\nid = "rep-{mat}"\nprofile = "{profile}"\nrecord = "{VENDORED_RECORDS / rec}"\n'
                    f"speed = {speed}\n{extra}")
        if i < len(ox_links):
            devices += f'[[devices]]\nid = "ox-{mat}"\nprofile = "contec-cms50d-plus"\nport = "{ox_links[i]}"\n'
            devs.append(f"ox-{mat}")
            ox_mats.append(mat)
            ox_ids.append(f"ox-{mat}")
        if i in ble_at:
            devices += f'[[devices]]\nid = "ble-{mat}"\nprofile = "generic-pulse-oximeter"\naddress = "{ble_at[i]}"\n'
            devs.append(f"ble-{mat}")
            ble_mats.append(mat)
            ble_ids.append(f"ble-{mat}")
        mats.append(mat)
        # a limit every normal heart rate exceeds: this guest must alarm in every run of the daemon
        guest_tables += (f'[[guests]]\nmat = "{mat}"\nname = "Soak guest {i + 1}"\ndevices = {devs!r}\n'.replace("'", '"')
                         + "[guests.thresholds.hr]\nwarning_low = 30\ncritical_low = 25\nwarning_high = 45\n")
    path.write_text(text + devices + guest_tables)
    secret = path.parent / "booking.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return mats, ox_mats, ox_ids, ble_mats, ble_ids


def _mount_tmpfs(folder: Path, size_mb: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(folder)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        log.warning("tmpfs for the store not mounted (%s): the disk-full fault is skipped", res.stderr.strip())
    return res.returncode == 0


def run_soak(opt: SoakOptions) -> SoakReport:
    """Run the night and return its report (the caller prints it)."""
    from vigil.edge.broker import Mosquitto, free_port
    from vigil.testing.booking_server import BookingApp, booking_server
    from vigil.testing.cms50_emulator import Cms50Emulator
    from vigil.testing.loopback import Fault as HttpFault

    sim_s = opt.hours * 3600.0
    plan = schedule(sim_s, seed=opt.seed, kill_every_s=opt.kill_every_min * 60.0, kinds=opt.kinds)
    run = opt.run_dir.resolve()
    if run.exists():
        shutil.rmtree(run)
    (run / "logs").mkdir(parents=True)
    state = run / "state"
    # ~460 stored samples per guest per record second at ~3.3 bytes each (measured), x1.5, + 256 MB
    est_mb = opt.guests * opt.hours * 3600 * 460 * 3.3 / 2**20
    tmpfs_mb = opt.tmpfs_mb or (int(est_mb * 1.5) + 256 if os.geteuid() == 0 else 0)
    mounted = _mount_tmpfs(state, tmpfs_mb) if tmpfs_mb else False
    state.mkdir(exist_ok=True)
    offset_file = run / "clock-offset"
    offset_file.write_text("0")
    offset = 0.0

    broker = Mosquitto(run / "broker", port=free_port()).start()
    srv = booking_server(SECRET)
    srv.start()
    app = srv.app
    assert isinstance(app, BookingApp)
    emus = [Cms50Emulator(run / f"ox-{i + 1}", spo2=OX_SPO2) for i in range(min(opt.serial, opt.guests))]
    for e in emus:
        e.start()
    n_ble = len(ble_guests(opt.guests, len(emus), opt.ble))
    radio = BleRadio(n_ble, speed=opt.speed, spo2=OX_SPO2).start() if n_ble else None
    cfg = run / "config.toml"
    mats, ox_mats, ox_ids, ble_mats, ble_ids = write_config(
        cfg, store=state / "vigil.db", port=broker.port, booking_url=srv.base_url, guests=opt.guests,
        ox_links=[e.link for e in emus], speed=opt.speed, ble_addresses=radio.addresses if radio else [])
    shim = [sys.executable, "-m", "vigil.soak.clockshim", str(offset_file)]
    daemon = Proc("daemon", shim + ["run", "--config", str(cfg)], run / "logs",
                  env={TEST_HCI_ENV: radio.spec} if radio else {})
    sync = Proc("sync", shim + ["sync", "--config", str(cfg), "--roster-interval", "5"], run / "logs")
    ballast = state / "ballast"
    pending = list(plan)
    active: list[tuple[float, Fault, FaultRun]] = []
    done: list[FaultRun] = []
    storm_next = 0.0
    ble_next = 0.0
    broker_ps: Any = None
    broker_cpu: dict[int, float] = {}

    def set_offset(value: float) -> None:
        nonlocal offset
        offset = value
        offset_file.write_text(f"{value:.3f}")

    def begin(f: Fault, fr: FaultRun) -> None:
        nonlocal storm_next, ble_next
        if f.kind == "daemon_kill":
            if not daemon.kill(f.duration_s, offset):
                fr.note = "skipped: daemon not running"
        elif f.kind == "sync_kill":
            if not sync.kill(f.duration_s, offset):
                fr.note = "skipped: sync not running"
        elif f.kind == "broker_restart":
            broker.kill()
        elif f.kind == "cloud_outage":
            srv.down()
        elif f.kind == "cloud_5xx":
            srv.faults.always(HttpFault("status", status=503))
        elif f.kind == "serial_garbage":
            for e in emus:
                e.garbage_every = 5
        elif f.kind == "serial_storm":
            storm_next = 0.0
        elif f.kind == "ble_storm":
            if radio is None:
                fr.note = "skipped: no BLE devices"
                return
            ble_next = 0.0
        elif f.kind == "clock_jump":
            set_offset(offset + f.params["seconds"])
        elif f.kind == "disk_full":
            if not mounted:
                fr.note = "skipped: no tmpfs (needs root)"
                return
            free = shutil.disk_usage(state).free
            size = max(0, free - int(MIN_FREE_MB / 2 * 2**20))
            with ballast.open("wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, size)
            fr.note = f"ballast {size / 2**20:.0f} MB"

    def finish(f: Fault) -> None:
        if f.kind == "broker_restart":
            broker.start()
        elif f.kind == "cloud_outage":
            srv.up()
        elif f.kind == "cloud_5xx":
            srv.faults.always(None)
        elif f.kind == "serial_garbage":
            for e in emus:
                e.garbage_every = 0
        elif f.kind == "serial_storm":
            for e in emus:
                if e._master is None:
                    e.plug()
        elif f.kind == "ble_storm" and radio is not None:
            radio.heal()
        elif f.kind == "disk_full":
            with contextlib.suppress(FileNotFoundError):
                ballast.unlink()

    # every time the harness keeps is monotonic: the clock-jump fault steps the children's wall clock
    t0_mono = time.monotonic()
    daemon.start()
    time.sleep(1.0)
    sync.start()
    last_sample = 0.0
    try:
        while True:
            now = time.monotonic()
            sim = (now - t0_mono) * opt.speed
            if sim >= sim_s:
                break
            while pending and pending[0].at_s <= sim:
                f = pending.pop(0)
                fr = FaultRun(f.kind, f.at_s, now, now + f.duration_s, dict(f.params))
                log.info("fault at sim %.0f s: %s %s", f.at_s, f.kind, f.params or "")
                begin(f, fr)
                if f.duration_s > 0 and not fr.note.startswith("skipped"):
                    active.append((now + f.duration_s, f, fr))
                done.append(fr)
            for item in [a for a in active if a[0] <= now]:
                finish(item[1])
                active.remove(item)
            if any(f.kind == "serial_storm" for _e, f, _r in active) and now >= storm_next:
                for e in emus:
                    if e._master is None:
                        e.plug()
                    else:
                        e.unplug()
                storm_next = now + 1.0
            if radio is not None and any(f.kind == "ble_storm" for _e, f, _r in active) and now >= ble_next:
                radio.storm_step()
                ble_next = now + 1.0
            daemon.poll(offset)
            sync.poll(offset)
            if now - last_sample >= 2.0:
                daemon.sample()
                sync.sample()
                last_sample = now
                if broker.proc is not None:
                    import psutil

                    try:
                        if broker_ps is None or broker_ps.pid != broker.proc.pid:
                            broker_ps = psutil.Process(broker.proc.pid)
                        ct = broker_ps.cpu_times()
                        broker_cpu[broker_ps.pid] = ct.user + ct.system
                    except psutil.Error:
                        pass
            time.sleep(0.05)
        # the end of the night: every fault healed, the daemon stopped cleanly, the outbox drained
        for _e, f, _r in active:
            finish(f)
        active.clear()
        if daemon.current is None:
            daemon.start()
            time.sleep(5.0)
        daemon.stop(offset)
        if sync.current is None:
            sync.start()
        t_drain = time.monotonic()
        drained = _drain(state / "vigil.db", timeout_s=opt.drain_timeout_s)
        drain_s = time.monotonic() - t_drain
        sync.stop(offset)
        wall_s = time.monotonic() - t0_mono
        for p in (daemon, sync):
            for inc in p.incs:
                _session_from_log(run / "logs" / f"{p.name}-{inc.n}.log", inc)
        serial_sent = sum(e.sent for e in emus)
        ble_stats = radio.stats() if radio is not None else {}
        cpu = {"daemon": sum(i.cpu_s for i in daemon.incs), "sync": sum(i.cpu_s for i in sync.incs),
               "mosquitto": sum(broker_cpu.values())}
        sync_rss = [mb for i in sync.incs for _t, mb in i.rss]
        params = {"hours": opt.hours, "speed": opt.speed, "guests": opt.guests, "serial": len(emus), "ble": n_ble,
                  "seed": opt.seed,
                  "kill_every_min": opt.kill_every_min, "tmpfs_mb": tmpfs_mb if mounted else 0,
                  "drain_s": round(drain_s, 1), "drained": drained}
        inputs = dict(incs=daemon.incs, faults=done, mats=mats, ox_mats=ox_mats, ox_devices=ox_ids,
                      ble_mats=ble_mats, ble_devices=ble_ids, ble_stats=ble_stats, serial_sent=serial_sent, booking_applied=[str(e.get("id")) for e in app.applied],
                      booking_received=app.received, params=params, wall_s=wall_s,
                      commit_interval_s=COMMIT_INTERVAL_S, sync_rss=sync_rss, cpu_s=cpu)
        save_inputs(run / "inputs.json", inputs)
        if opt.keep and mounted:
            _copy_store(state / "vigil.db", run / "vigil.db")
        report = analyse(db=state / "vigil.db", **inputs)  # type: ignore[arg-type]
        (run / "report.json").write_text(report.to_json())
        return report
    finally:
        for p in (daemon, sync):
            with contextlib.suppress(Exception):
                p.stop(offset, timeout=10)
        for e in emus:
            with contextlib.suppress(Exception):
                e.stop()
        if radio is not None:
            with contextlib.suppress(Exception):
                radio.stop()
        with contextlib.suppress(Exception):
            srv.stop()
        broker.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(state)], capture_output=True)


def _copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of the store (WAL included) through SQLite's backup API."""
    import sqlite3

    a, b = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        b.close()
        a.close()


def _drain(db: Path, timeout_s: float) -> bool:
    """Wait until `vigil sync` has no booking rows left pending or in flight."""
    import sqlite3

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                (left,) = con.execute("SELECT COUNT(*) FROM outbox WHERE destination = 'booking' "
                                      "AND status IN ('pending', 'inflight')").fetchone()
            finally:
                con.close()
            if left == 0:
                return True
        except sqlite3.Error:
            pass
        time.sleep(0.5)
    log.warning("outbox not drained within %.0f s", timeout_s)
    return False


def _session_from_log(path: Path, inc: Incarnation) -> None:
    """The session id a daemon run opened (its log says "record store ... open, session <id>")."""
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if "open, session " in line:
                inc.session = line.rsplit("open, session ", 1)[1].strip()
                return
