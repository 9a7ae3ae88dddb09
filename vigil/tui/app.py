"""The facilitator dashboard (Textual): guest tiles, alarm panel, status bar, guest view, operator commands.

A worker task runs `vigil.bus.Bus` (aiomqtt, reconnecting) and folds every message into the pure
`RoomView`; a 4 Hz timer redraws what changed (ECG sweeps are thereby throttled to 4 frames/s per
tile, which also gives the 2 Hz flash of high-priority alarms). Commands are signed with the
operator's secret (HMAC-SHA256, docs/INTERFACES.md) and the daemon's reply shows in the status bar.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from vigil.bus import Bus, Topics, decode
from vigil.tui import render
from vigil.tui.layout import GAP, grid_for
from vigil.tui.model import SYSTEM, RoomView
from vigil.tui.strips import text_strip

log = logging.getLogger(__name__)

TICK_S = 0.25  # redraw cadence: ECG sweeps at 4 frames/s, the high-priority flash at 2 Hz
PAUSE_S = 120.0  # IEC 60601-1-8 AUDIO PAUSED default
BACKGROUND = Style(bgcolor="black")  # under every tile segment (a terminal's own default may be light)


@dataclass
class Connection:
    """Where the dashboard connects and as whom."""

    room: str
    host: str = "127.0.0.1"
    port: int = 1883
    operator: str = "facilitator"
    secret: bytes | None = None  # HMAC key for commands (operator's secret_file)
    username: str | None = None
    password: str | None = None


class Tiles(Widget):
    """All guest tiles, laid out by `layout.grid_for`, drawn with the line API from strips built once per tick."""

    DEFAULT_CSS = "Tiles { height: 1fr; }"

    def __init__(self) -> None:
        super().__init__()
        self._strips: list[Strip] = []
        self._key: tuple[int, int, int] | None = None

    def build(self) -> list[Strip]:
        """Compose the tiles of every guest row by row into one strip per screen line."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        room = app.room
        w, h = self.size.width, self.size.height
        guests = room.ordered_guests()
        if not guests:
            return [text_strip(Text("waiting for the daemon's guest list…", style=app.palette.dim), w)] + \
                [Strip.blank(w)] * max(0, h - 1)
        grid = grid_for(len(guests), w, h)
        mono = time.monotonic()
        stale = room.room_stale(mono)
        flash_t = app.flash_time()
        rendered = []
        for i, g in enumerate(guests):
            col, _ = grid.cell(i)
            tw = grid.tile_w if col < grid.cols - 1 else w - (grid.cols - 1) * (grid.tile_w + GAP)
            lines = render.tile_lines(g, tw, grid.tile_h, mono, stale, app.palette, large=app.large,
                                      selected=(i == app.tile_cursor), flash_t=flash_t)
            rendered.append([text_strip(t, tw) for t in lines])
        gap = Strip.blank(GAP)
        out: list[Strip] = []
        for r in range(grid.rows):
            row_tiles = rendered[r * grid.cols:(r + 1) * grid.cols]
            for line in range(grid.tile_h):
                parts: list[Strip] = []
                for j, tl in enumerate(row_tiles):
                    if j:
                        parts.append(gap)
                    parts.append(tl[line])
                out.append(Strip.join(parts).adjust_cell_length(w).apply_style(BACKGROUND))
        out = out[:h]
        out += [Strip.blank(w)] * (h - len(out))
        return out

    def on_click(self, event: events.Click) -> None:
        """A click on a tile selects it and opens its guest view."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        guests = app.room.ordered_guests()
        if not guests:
            return
        grid = grid_for(len(guests), self.size.width, self.size.height)
        col = min(grid.cols - 1, event.x // (grid.tile_w + GAP))
        row = event.y // max(1, grid.tile_h)
        i = row * grid.cols + col
        if 0 <= i < len(guests):
            app.tile_cursor = i
            app.action_open_tile()

    def render_line(self, y: int) -> Strip:
        """One screen line of the grid (the grid is rebuilt at most once per redraw tick)."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        key = (app.redraws, self.size.width, self.size.height)
        if key != self._key:
            self._strips = self.build()
            self._key = key
        return self._strips[y] if 0 <= y < len(self._strips) else Strip.blank(self.size.width)


class AlarmPanel(Widget):
    """Active alarms by priority then onset, with the cursor used by the alarm keys."""

    DEFAULT_CSS = "AlarmPanel { height: 5; }"

    def render(self) -> Text:
        """Render the panel from the view-model."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        return render.alarm_panel(app.room, self.size.width, self.size.height, time.monotonic(),
                                  app.alarm_cursor, app.palette)


class StatusBar(Widget):
    """Broker, daemon heartbeat, sync, operator, last command reply."""

    DEFAULT_CSS = "StatusBar { height: 1; }"

    def render(self) -> Text:
        """Render one line."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        return render.status_bar(app.room, self.size.width, time.monotonic(), app.conn.operator, app.palette,
                                 night=app.night, large=app.large)


class Banner(Widget):
    """The STALE banner (only displayed while the room is not live)."""

    DEFAULT_CSS = "Banner { height: 1; }"

    def render(self) -> Text:
        """One line saying why nothing is live."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        return render.stale_banner(app.room, self.size.width, time.monotonic(), app.palette)


class GuestDetail(Widget):
    """Body of the guest view."""

    DEFAULT_CSS = "GuestDetail { height: 1fr; }"

    def __init__(self, mat: str) -> None:
        super().__init__()
        self.mat = mat

    def render(self) -> Text:
        """Trends, ECG strip, alarm history."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        g = app.room.guest(self.mat)
        return render.guest_detail(app.room, g, self.size.width, self.size.height, time.monotonic(), app.palette)


class GuestScreen(Screen[None]):
    """One guest: session trends with threshold bands, larger ECG strip, alarm history."""

    BINDINGS: ClassVar = [Binding("escape,backspace", "app.pop_screen", "back"),
                          Binding("a", "guest_cmd('ack')", "ack"), Binding("p", "guest_cmd('pause')", "pause"),
                          Binding("o", "guest_off", "off")]

    def __init__(self, mat: str) -> None:
        super().__init__()
        self.mat = mat

    def compose(self) -> ComposeResult:
        """Status bar + detail."""
        yield StatusBar()
        yield GuestDetail(self.mat)

    def action_guest_cmd(self, op: str) -> None:
        """Acknowledge / pause every alarm of this guest."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        app.send(op, self.mat, None, PAUSE_S if op == "pause" else None)

    def action_guest_off(self) -> None:
        """ALARM OFF for this guest's top condition (confirmation first)."""
        app: DashboardApp = self.app  # type: ignore[assignment]
        top = app.room.guest(self.mat).top_alarm()
        if top is not None:
            app.confirm_off(self.mat, top.condition)


class ConfirmOff(ModalScreen[bool]):
    """Confirmation before ALARM OFF (y / n)."""

    BINDINGS: ClassVar = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]
    DEFAULT_CSS = """
    ConfirmOff { align: center middle; }
    ConfirmOff > Static { width: 60; height: auto; border: heavy $warning; padding: 1 2; background: $panel; }
    """

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def compose(self) -> ComposeResult:
        """The question."""
        yield Static(f"Switch ALARM OFF for {self.label}?\n\nThis condition will not alarm until resumed "
                     "(r). A reminder stays on the screen while it is off.\n\n[b]y[/b] = switch off   "
                     "[b]n[/b] = keep alarming")

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)


class DashboardApp(App[int]):
    """`vigil tui`."""

    CSS = """
    Screen { layout: vertical; background: black; }
    Screen.-night { background: #000000; }
    """
    BINDINGS: ClassVar = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),  # like every other vigil command
        Binding("up,k", "cursor(-1)", "prev alarm", show=False),
        Binding("down,j", "cursor(1)", "next alarm", show=False),
        Binding("left,h", "tile(-1)", "prev guest", show=False),
        Binding("right,l,tab", "tile(1)", "next guest", show=False),
        Binding("a", "ack", "acknowledge"),
        Binding("p", "pause", "pause audio 2 min"),
        Binding("o", "alarm_off", "alarm off"),
        Binding("r", "resume", "resume"),
        Binding("enter", "open_guest", "guest view of the selected alarm"),
        Binding("g", "open_tile", "guest view of the selected tile"),
        Binding("n", "night", "night mode"),
        Binding("L,plus", "large", "large digits"),
    ]

    def __init__(self, conn: Connection, room: RoomView | None = None, *, connect: bool = True,
                 night: bool = False, large: bool = False) -> None:
        super().__init__()
        self.conn = conn
        self.room = room or RoomView(conn.room)
        self.connect = connect
        self.night = night
        self.large = large
        self.palette = render.NIGHT if night else render.DAY
        self.alarm_cursor = 0
        self.tile_cursor = 0
        self.bus: Bus | None = None
        self.ticks = 0
        self.sent: list[dict[str, Any]] = []
        self._seen = -1  # room.version at the last redraw of the text panels
        self.frames = 0
        self.redraws = 0  # bumped whenever the tiles must be rebuilt

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        """Status bar, STALE banner, tiles, alarm panel."""
        yield StatusBar()
        yield Banner()
        with Vertical():
            yield Tiles()
            yield AlarmPanel()

    def on_mount(self) -> None:
        """Start the bus worker and the redraw timer."""
        self.title = f"Vigil {self.conn.room}"
        self._apply_palette()
        self._layout_panel()
        if self.connect:
            self.run_worker(self._bus_loop(), name="bus", exclusive=True, group="bus")
        self.set_interval(TICK_S, self._tick)

    def on_resize(self) -> None:
        """Re-fit the alarm panel when the terminal changes."""
        self._layout_panel()

    def _layout_panel(self) -> None:
        try:
            panel = self.query_one(AlarmPanel)
            banner = self.query_one(Banner)
        except NoMatches:  # the guest view is on screen
            return
        h = self.size.height
        n = len(self.room.active_alarms())
        cap = 4 if h < 30 else 8
        panel.styles.height = max(2, min(cap, n + 1))
        banner.display = self.room.room_stale(time.monotonic())

    def _apply_palette(self) -> None:
        self.palette = render.NIGHT if self.night else render.DAY
        self.screen.set_class(self.night, "-night")

    def flash_time(self) -> float:
        """Time used for the flash phase: quantised to redraw ticks so 2 Hz flashes stay regular."""
        return self.ticks * TICK_S

    # ------------------------------------------------------------------ redraw
    def _tick(self) -> None:
        if not self.screen_stack:  # shutting down: the screens are gone but a last timer tick can still fire
            return
        self.ticks += 1
        n_alarms = len(self.room.active_alarms())
        if self.alarm_cursor >= n_alarms:
            self.alarm_cursor = max(0, n_alarms - 1)
        if self.tile_cursor >= len(self.room.guests):
            self.tile_cursor = max(0, len(self.room.guests) - 1)
        self._layout_panel()
        screen = self.screen
        self.redraws += 1
        for w in screen.query(Tiles):
            w.refresh()
        self.frames += 1
        if self.ticks % 2 == 0 or self.room.version != self._seen:
            for w2 in screen.query(StatusBar):
                w2.refresh()
            for w3 in screen.query(AlarmPanel):
                w3.refresh()
            for w4 in screen.query(Banner):
                w4.refresh()
            for w5 in screen.query(GuestDetail):
                w5.refresh()
            self._seen = self.room.version

    # ------------------------------------------------------------------ bus
    def topics(self) -> list[str]:
        """What the dashboard subscribes to."""
        t = Topics(self.conn.room)
        return [t.status(), t.sync_status(), f"{t.base}/roster", f"{t.base}/guest/+/vitals", f"{t.base}/guest/+/ecg",
                f"{t.base}/guest/+/alarms", f"{t.base}/guest/+/history", t.alarm_events(), t.cmd_reply(self.conn.operator)]

    def on_bus_message(self, topic: str, data: bytes) -> None:
        """Fold one raw MQTT message into the view-model."""
        try:
            payload = decode(data)
        except ValueError:
            return
        before = len(self.room.events)
        self.room.apply(topic, payload, time.monotonic())
        if len(self.room.events) != before and self.room.events[-1].event == "reminder":
            ev = self.room.events[-1]  # ALARM OFF reminder from the engine: say it where it cannot be missed
            who = "the box" if ev.mat == SYSTEM else ev.mat
            self.notify(f"ALARM OFF is still on: {ev.condition} of {who} (r resumes it)", title="reminder",
                        severity="warning", timeout=20)

    def on_bus_state(self, up: bool, why: str) -> None:
        """Broker connection changed."""
        self.room.broker_connected = up
        self.room.broker_error = "" if up else why
        self.room.version += 1

    async def _bus_loop(self) -> None:
        """Run the bus client (it connects and reconnects in the background) until the app exits."""
        c = self.conn
        self.bus = Bus(c.room, c.host, c.port, client_id=f"vigil-tui-{c.operator}-{secrets.token_hex(3)}",
                       username=c.username, password=c.password, last_will=False, subscriptions=self.topics(),
                       on_message=self.on_bus_message, on_state=self.on_bus_state, backoff_cap_s=3.0)
        async with self.bus:
            await asyncio.Event().wait()

    # ------------------------------------------------------------------ commands
    def send(self, op: str, mat: str, condition: str | None, duration_s: float | None = None) -> dict[str, Any] | None:
        """Build, sign and publish one command on cmd/<operator>; the reply shows in the status bar."""
        from vigil.alarms.commands import sign

        cmd: dict[str, Any] = {"v": 1, "op": op, "operator": self.conn.operator, "guest": mat,
                               "ts": round(time.time(), 3), "nonce": secrets.token_hex(8), "id": uuid.uuid4().hex[:12]}
        if condition is not None:
            cmd["condition"] = condition
        if duration_s is not None:
            cmd["duration_s"] = duration_s
        if self.conn.secret is not None:
            cmd = sign(cmd, self.conn.secret)
        if self.bus is None or not self.bus.connected:
            self.notify(f"{op} not sent: no connection to the broker", severity="error", timeout=5)
            return None
        self.bus.publish(self.bus.topics.cmd(self.conn.operator), cmd, qos=1)
        self.sent.append(cmd)
        log.info("command %s sent for mat %s %s", op, mat, condition or "(all)")
        return cmd

    def selected_alarm(self) -> Any:
        """The alarm under the panel cursor, if any."""
        alarms = self.room.active_alarms()
        if not alarms:
            return None
        return alarms[min(self.alarm_cursor, len(alarms) - 1)]

    def action_cursor(self, step: int) -> None:
        """Move the alarm cursor."""
        n = len(self.room.active_alarms())
        self.alarm_cursor = max(0, min(n - 1, self.alarm_cursor + step)) if n else 0
        self.refresh_panels()

    def action_tile(self, step: int) -> None:
        """Move the guest cursor."""
        n = len(self.room.guests)
        self.tile_cursor = (self.tile_cursor + step) % n if n else 0
        self.refresh_panels()

    def refresh_panels(self) -> None:
        """Redraw everything now (after a key)."""
        self.redraws += 1
        for w in self.screen.query("Tiles, AlarmPanel, StatusBar"):
            w.refresh()

    def action_ack(self) -> None:
        """Acknowledge the selected alarm."""
        a = self.selected_alarm()
        if a is None:
            self.notify("no alarm to acknowledge", timeout=3)
            return
        self.send("ack", a.mat, a.condition)

    def action_pause(self) -> None:
        """AUDIO PAUSED for 2 min on the selected alarm's guest (a new higher priority breaks through)."""
        a = self.selected_alarm()
        if a is None:
            self.notify("no alarm to pause", timeout=3)
            return
        self.send("pause", a.mat, None, PAUSE_S)

    def action_resume(self) -> None:
        """Undo ALARM OFF / AUDIO PAUSED of the selected alarm."""
        a = self.selected_alarm()
        if a is not None:
            self.send("resume", a.mat, a.condition)

    def action_alarm_off(self) -> None:
        """ALARM OFF for the selected condition, after a confirmation."""
        a = self.selected_alarm()
        if a is None:
            self.notify("no alarm selected", timeout=3)
            return
        self.confirm_off(a.mat, a.condition)

    def confirm_off(self, mat: str, condition: str) -> None:
        """Ask, then send ALARM OFF for one condition of one guest."""
        g = self.room.guests.get(mat)
        who = "the box" if mat == SYSTEM else f"{mat} {g.name if g is not None else ''}".strip()

        def done(yes: bool | None) -> None:
            if yes:
                self.send("off", mat, condition)

        self.push_screen(ConfirmOff(f"{condition} of {who}"), done)

    def action_open_guest(self) -> None:
        """Open the guest view of the selected alarm's guest, else of the selected tile."""
        a = self.selected_alarm()
        guests = self.room.ordered_guests()
        if a is not None and a.mat in self.room.guests:
            mat = a.mat
        elif guests:
            mat = guests[min(self.tile_cursor, len(guests) - 1)].mat
        else:
            return
        self.push_screen(GuestScreen(mat))

    def action_open_tile(self) -> None:
        """Open the guest view of the selected tile (←/→ select; a click on a tile does the same)."""
        guests = self.room.ordered_guests()
        if guests:
            self.push_screen(GuestScreen(guests[min(self.tile_cursor, len(guests) - 1)].mat))

    def action_night(self) -> None:
        """Toggle the night palette (dim red/amber)."""
        self.night = not self.night
        self._apply_palette()
        self.refresh_panels()

    def action_large(self) -> None:
        """Toggle large digits in the tiles."""
        self.large = not self.large
        self.refresh_panels()
