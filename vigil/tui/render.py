"""Pure renderers: view-model → Rich `Text` for tiles, the alarm panel, the status bar and the guest view.

Every alarm cue has a non-colour twin (symbol + word: "!!! HIGH", "!! MED", "! LOW"), so the screen
reads correctly on a monochrome terminal or to a colour-blind facilitator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from rich.text import Text

from vigil.tui import braille
from vigil.tui.model import (
    OLD_QTC_S,
    OLD_VALUE_S,
    PRIORITY_SYMBOL,
    PRIORITY_WORD,
    SYSTEM,
    ActiveAlarm,
    GuestView,
    RoomView,
    flash_on,
)

SWEEP_S = 4.0  # seconds across a tile's ECG sweep (at ~30 cells: ~25 mm/s-like detail)
REPLY_SHOW_S = 15.0  # how long the daemon's answer to a command stays on screen
STATE_WORD = {"active": "", "acknowledged": "ACK", "audio_paused": "PAUSED", "latched": "LATCHED",
              "alarm_off": "OFF", "inactive": ""}


@dataclass(frozen=True)
class Palette:
    """Colours of one theme (day, or night: dim red/amber for a dark room)."""

    name: str
    fg: str
    dim: str
    ecg: str
    high: str  # background of a high-priority alarm
    high_fg: str
    medium: str
    medium_fg: str
    low: str
    low_fg: str
    ok: str
    stale: str
    select: str


DAY = Palette("day", fg="white", dim="grey62", ecg="green3", high="red3", high_fg="bright_white",
              medium="yellow3", medium_fg="black", low="dark_cyan", low_fg="black", ok="green3",
              stale="magenta", select="blue")
NIGHT = Palette("night", fg="#c06000", dim="#603000", ecg="#a03000", high="#a00000", high_fg="#ffb000",
                medium="#805000", medium_fg="#000000", low="#503010", low_fg="#c06000", ok="#806000",
                stale="#a04080", select="#402000")


def alarm_style(p: Palette, priority: str) -> str:
    """Rich style of an alarm badge of `priority`."""
    bg, fg = {"high": (p.high, p.high_fg), "medium": (p.medium, p.medium_fg)}.get(priority, (p.low, p.low_fg))
    return f"bold {fg} on {bg}"


def fmt_age(s: float) -> str:
    """Compact age: 45s, 3m, 2h."""
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h"


def band_level(value: float | None, band: tuple[float | None, float | None, float | None, float | None] | None) -> str:
    """'high', 'medium' or '' for a value against (crit_low, warn_low, warn_high, crit_high)."""
    if value is None or band is None:
        return ""
    cl, wl, wh, ch = band
    if (cl is not None and value < cl) or (ch is not None and value > ch):
        return "high"
    if (wl is not None and value < wl) or (wh is not None and value > wh):
        return "medium"
    return ""


def _num(text: Text, p: Palette, label: str, value: float | None, unit_fmt: str, level: str, age: float | None,
         old_after: float = OLD_VALUE_S) -> None:
    """Append 'LABEL value' (value coloured by its band; '--' when unknown; age shown when old)."""
    text.append(label + " ", style=p.dim)
    if value is None:
        text.append("--", style=p.dim)
        return
    style = f"bold {p.fg}" if not level else alarm_style(p, level)
    old = age is not None and age > old_after
    text.append(unit_fmt.format(value), style=p.dim if old else style)
    if old and age is not None:
        text.append(f"({fmt_age(age)})", style=p.dim)


def truncate(s: str, width: int) -> str:
    """Cut `s` to `width` cells with an ellipsis (never silently)."""
    if width <= 0:
        return ""
    return s if len(s) <= width else s[: max(0, width - 1)] + "…"


def _pad(text: Text, width: int) -> Text:
    text.truncate(width, overflow="ellipsis")
    if text.cell_len < width:
        text.append(" " * (width - text.cell_len))
    return text


def alarm_badge(a: ActiveAlarm | None, now: float) -> str:
    """Words of a tile's alarm badge: '!!! HIGH vt', '!! MED hr_high ACK', 'OK'."""
    if a is None:
        return "OK"
    word = STATE_WORD.get(a.state, a.state.upper())
    if a.state == "audio_paused":
        left = a.pause_left(now)
        if left is not None:
            word = f"PAUSED {int(left) // 60}:{int(left) % 60:02d}"
    return " ".join(x for x in (PRIORITY_SYMBOL.get(a.priority, "!"), PRIORITY_WORD.get(a.priority, "?"),
                                a.condition, word) if x)


BIG = {
    "0": ("┏━┓", "┃ ┃", "┗━┛"), "1": ("  ┃", "  ┃", "  ┃"), "2": ("━━┓", "┏━┛", "┗━━"),
    "3": ("━━┓", " ━┫", "━━┛"), "4": ("┃ ┃", "┗━┫", "  ┃"), "5": ("┏━━", "┗━┓", "━━┛"),
    "6": ("┏━━", "┣━┓", "┗━┛"), "7": ("━━┓", "  ┃", "  ┃"), "8": ("┏━┓", "┣━┫", "┗━┛"),
    "9": ("┏━┓", "┗━┫", "━━┛"), "-": ("   ", "━━━", "   "), " ": ("   ", "   ", "   "),
}


def big_digits(s: str) -> list[str]:
    """Three rows of large seven-segment-like digits for `s` (digits, '-', ' ')."""
    rows = ["", "", ""]
    for ch in s:
        glyph = BIG.get(ch, BIG[" "])
        for i in range(3):
            rows[i] += glyph[i] + " "
    return rows


def tile(g: GuestView, width: int, height: int, now: float, room_stale: bool, p: Palette = DAY, *,
         large: bool = False, selected: bool = False, flash_t: float | None = None) -> Text:
    """One guest tile of `width` × `height` cells as one Text (see `tile_lines`)."""
    return Text("\n").join(tile_lines(g, width, height, now, room_stale, p, large=large, selected=selected,
                                      flash_t=flash_t))


def tile_lines(g: GuestView, width: int, height: int, now: float, room_stale: bool, p: Palette = DAY, *,
               large: bool = False, selected: bool = False, flash_t: float | None = None) -> list[Text]:
    """One guest tile, `height` lines of `width` cells (adapts from 3 lines up); `flash_t` drives the flash."""
    lines: list[Text] = []
    top = g.top_alarm()
    badge = alarm_badge(top, now)
    off = [a.condition for a in g.alarms if a.state == "alarm_off"]
    if top is None and off:
        badge = "OFF " + ",".join(off)  # ALARM OFF reminder, shown while it lasts
    flashing = top is not None and top.state in ("active", "audio_paused")
    lit = top is not None and (not flashing or flash_on(top.priority, now if flash_t is None else flash_t))
    head = Text()
    name = f"{g.mat} {g.name}" if g.name and g.name != g.mat else g.mat
    name_w = max(3, width - len(badge) - 1)
    head.append(truncate(name, name_w).ljust(name_w), style=f"bold {p.fg}" + (f" on {p.select}" if selected else ""))
    head.append(" ")
    if top is None:
        head.append(badge, style=f"bold reverse {p.fg}" if off else p.ok)
    else:
        head.append(badge, style=alarm_style(p, top.priority) if lit else f"bold {p.fg} reverse")
    lines.append(_pad(head, width))

    stale = room_stale or g.stale(now)
    body_h = height - 1
    if stale:
        since = "never" if g.vitals_received is None else fmt_age(now - g.vitals_received)
        st = Text()
        st.append(" STALE ", style=f"bold {p.fg} on {p.stale}")
        st.append(f" no data {since}" if not room_stale else " link lost", style=p.dim)
        lines.append(_pad(st, width))
        while len(lines) < height:
            lines.append(Text(" " * width))
        return lines[:height]

    label, hr = g.heart_rate()
    hr_v = g.vitals.get("hr" if label == "HR" else "pulse_rate")
    spo2 = g.value("spo2")
    spo2_v = g.vitals.get("spo2")
    hr_age = hr_v.age(now) if hr_v is not None else None
    spo2_age = spo2_v.age(now) if spo2_v is not None else None
    hr_old = hr_age is not None and hr_age > OLD_VALUE_S
    spo2_old = spo2_age is not None and spo2_age > OLD_VALUE_S
    if large and body_h >= 6 and width >= 30:
        a = big_digits(f"{hr:3.0f}" if hr is not None else "---")
        b = big_digits(f"{spo2:3.0f}" if spo2 is not None else "---")
        hr_lvl = band_level(hr, g.bands.get("hr"))
        sp_lvl = band_level(spo2, g.bands.get("spo2"))
        hr_style = p.dim if hr_old else (alarm_style(p, hr_lvl) if hr_lvl else f"bold {p.fg}")
        sp_style = p.dim if spo2_old else (alarm_style(p, sp_lvl) if sp_lvl else f"bold {p.fg}")
        for i in range(3):
            t = Text()
            t.append((label if i == 0 else "  ") + " ", style=p.dim)
            t.append(a[i], style=hr_style)
            t.append(("SpO2" if i == 0 else "    ") + " ", style=p.dim)
            t.append(b[i], style=sp_style)
            if i == 1 and (hr_old or spo2_old):  # an old reading says how old it is
                t.append(f"{fmt_age(max(hr_age or 0.0, spo2_age or 0.0))} old", style=p.dim)
            lines.append(_pad(t, width))
    nums: Text | None = Text()
    if large and body_h >= 6 and width >= 30:
        pass
    elif width < 30:  # narrow tiles (many guests on a small terminal): "HR72 S97 120/80"
        nums = Text()
        for lab, val, band, old_v in ((label, hr, "hr", hr_old), (" S", spo2, "spo2", spo2_old)):
            nums.append(lab, style=p.dim)
            lvl = band_level(val, g.bands.get(band))
            live = val is not None and not old_v
            nums.append((f"{val:.0f}" if val is not None else "--") + ("?" if old_v and val is not None else ""),
                        style=(alarm_style(p, lvl) if lvl else f"bold {p.fg}") if live else p.dim)
        sbp, dbp = g.value("sbp"), g.value("dbp")
        nums.append(" ")
        lvl = band_level(sbp, g.bands.get("sbp"))
        nums.append(f"{sbp:.0f}/{dbp:.0f}" if sbp is not None and dbp is not None else "--/--",
                    style=(alarm_style(p, lvl) if lvl else f"bold {p.fg}") if sbp is not None else p.dim)
        lines.append(_pad(nums, width))
        nums = None
    else:
        assert nums is not None
        _num(nums, p, label, hr, "{:.0f}", band_level(hr, g.bands.get("hr")), hr_age)
        nums.append("  ")
        _num(nums, p, "SpO2", spo2, "{:.0f}", band_level(spo2, g.bands.get("spo2")), spo2_age)
        nums.append("  ")
    if nums is not None:
        sbp, dbp = g.value("sbp"), g.value("dbp")
        sbp_v = g.vitals.get("sbp")
        nums.append("BP ", style=p.dim)
        if sbp is None:
            nums.append("--/--", style=p.dim)
        else:
            lvl = band_level(sbp, g.bands.get("sbp"))
            nums.append(f"{sbp:.0f}/{dbp:.0f}" if dbp is not None else f"{sbp:.0f}/--",
                        style=alarm_style(p, lvl) if lvl else f"bold {p.fg}")
            if sbp_v is not None:
                nums.append(" " + fmt_age(sbp_v.age(now)), style=p.dim)
        lines.append(_pad(nums, width))

    if body_h >= 3:
        q = Text()
        qtc = g.value("qtc")
        q.append("QTc ", style=p.dim)
        if qtc is None:
            q.append("--", style=p.dim)
        else:
            lvl = band_level(qtc, g.bands.get("qtc"))
            qv = g.vitals.get("qtc")
            qtc_age = qv.age(now) if qv is not None else 0.0
            old_q = qtc_age > OLD_QTC_S
            q.append(f"{qtc:.0f}", style=p.dim if old_q else (alarm_style(p, lvl) if lvl else f"bold {p.fg}"))
            if g.baseline_qtc is not None:
                q.append(f" Δ{qtc - g.baseline_qtc:+.0f}", style=p.dim if old_q else p.fg)
            if old_q:
                q.append(f"({fmt_age(qtc_age)})", style=p.dim)
        q.append("  ")
        q.append(g.rhythm or "--", style=f"bold {p.fg}" if g.rhythm else p.dim)
        lines.append(_pad(q, width))

    footer: Text | None = None
    if body_h >= 4:
        footer = Text()
        bad = [s for s in g.devices.values() if s != "streaming"]
        footer.append("dev ", style=p.dim)
        footer.append(bad[0].upper() if bad else ("ok" if g.devices else "--"),
                      style=f"bold {p.fg} on {p.stale}" if bad else p.ok)
        footer.append("  bat ", style=p.dim)
        bat = g.battery()
        footer.append(f"{bat:.0f}%" if bat is not None else "--", style=p.fg if bat is not None else p.dim)
        footer.append("  sig ", style=p.dim)
        if g.quality is None:
            footer.append("--", style=p.dim)
        else:
            footer.append(f"{g.quality * 100:.0f}%", style=p.fg if g.quality >= 0.5 else alarm_style(p, "low"))
        if g.quality_flags:
            footer.append(" " + ",".join(g.quality_flags), style=p.dim)
    ecg_rows = height - len(lines) - (1 if footer is not None else 0)
    if ecg_rows > 0:
        for row in ecg_sweep(g, width, ecg_rows, now):
            lines.append(Text(row, style=p.ecg))
    if footer is not None:
        lines.append(_pad(footer, width))
    while len(lines) < height:
        lines.append(Text(" " * width))
    return lines[:height]


def ecg_sweep(g: GuestView, width: int, rows: int, now: float) -> list[str]:
    """The tile's sweeping ECG trace; blank (not a flat line) when no waveform arrived for > 3 s."""
    e = g.ecg
    if e.fs is None or e.received is None or now - e.received > 3.0 or len(e.samples) == 0:
        return ["\u2800" * width] * rows
    spp = max(1, int(round(SWEEP_S * e.fs / (2 * width))))
    return braille.sweep(e.samples, e.end_index, width, rows, spp)


# ------------------------------------------------------------------ alarm panel, status bar

def clock_text(wall: float | None) -> str:
    """HH:MM:SS local time of a wall-clock instant."""
    return time.strftime("%H:%M:%S", time.localtime(wall)) if wall else "--:--:--"


def alarm_panel(room: RoomView, width: int, height: int, now: float, cursor: int, p: Palette = DAY,
                off_reminders: bool = True) -> Text:
    """Active alarms by priority then onset; the cursor row is highlighted; ALARM OFF shown as a reminder."""
    alarms = room.active_alarms()
    lines: list[Text] = []
    title = Text()
    title.append(f" ALARMS {len([a for a in alarms if a.state != 'alarm_off'])} ", style=f"bold reverse {p.fg}")
    reply = room.replies[-1] if room.replies else None
    if reply is not None and now - reply.received < REPLY_SHOW_S:  # the daemon's answer replaces the key help
        msg = f"  {reply.op or 'cmd'}: {'ok' if reply.ok else 'REFUSED'} {reply.reason}"
        if reply.affected:
            msg += " (" + ",".join(reply.affected) + ")"
        title.append(msg, style=f"bold {p.ok}" if reply.ok else alarm_style(p, "medium"))
    else:
        title.append("  a:ack p:pause 2min o:off r:resume ⏎/g:guest n:night L:large q:quit",
                     style=p.dim)
    lines.append(_pad(title, width))
    if not alarms:
        lines.append(_pad(Text("  no active alarms", style=p.dim), width))
    start = 0
    avail = max(0, height - 1)
    if cursor >= avail:
        start = cursor - avail + 1
    for i, a in enumerate(alarms[start:start + avail], start=start):
        g = room.guests.get(a.mat)
        t = Text()
        mark = ">" if i == cursor else " "
        t.append(mark, style=f"bold {p.fg}")
        t.append(f"{PRIORITY_SYMBOL.get(a.priority, '!'):>3} {PRIORITY_WORD.get(a.priority, '?'):<4}",
                 style=alarm_style(p, a.priority))
        name = g.name if g is not None and g.name != a.mat else ""
        who = "BOX" if a.mat == SYSTEM else a.mat  # box-wide technical alarms
        narrow = width < 100  # 80-column terminals: shorter name, no channel in the escalation stage
        t.append(f" {who}" + (f" {truncate(name, 10 if narrow else 16)}" if name else ""), style=f"bold {p.fg}")
        t.append(f" {a.condition}", style=f"bold {p.fg}")
        if a.value is not None and isinstance(a.value, int | float) and math.isfinite(a.value):
            t.append(f" {a.value:.0f}", style=p.fg)
        t.append(f" {clock_text(a.onset_wall)}", style=p.dim)
        word = STATE_WORD.get(a.state, a.state)
        if a.state == "audio_paused":
            left = a.pause_left(now)
            word = f"PAUSED {int(left) // 60}:{int(left) % 60:02d}" if left is not None else "PAUSED"
        if a.state == "alarm_off":
            word = "ALARM OFF (reminder: still off)"
        t.append(f" {word or 'ACTIVE'}", style=f"bold {p.fg}")
        stage = room.escalation_stage(a.mat, a.condition, channel=not narrow)
        t.append(f"  esc: {stage}" if stage else "  esc: -", style=p.dim)
        if i == cursor:
            t.stylize(f"on {p.select}")
        lines.append(_pad(t, width))
    if len(alarms) > start + avail:
        lines[-1] = _pad(Text(f"  … {len(alarms) - start - avail + 1} more (↓)", style=p.dim), width)
    while len(lines) < height:
        lines.append(Text(" " * width))
    return Text("\n").join(lines[:height])


def status_bar(room: RoomView, width: int, now: float, operator: str, p: Palette = DAY,
               night: bool = False, large: bool = False, wall: float | None = None) -> Text:
    """Broker, daemon heartbeat, sync state, operator, the daemon's last answer and the time; STALE when nothing is live.

    While the answer to a command is shown (REPLY_SHOW_S) it has priority over the less important
    segments: when the line is too narrow (80 columns, the guest view has no alarm panel to repeat it),
    the NIGHT/LARGE flags, the daemon's uptime, the operator and the sync summary are left out, in that
    order, before the answer is cut.
    """
    segs: list[tuple[Text, int]] = []  # (segment, drop rank: lowest is left out first, `keep` never)
    keep = 4
    if room.broker_connected:
        segs.append((Text(" broker up ", style=p.ok), keep))
    else:
        segs.append((Text(" BROKER DOWN ", style=alarm_style(p, "medium")), keep))
    state = room.daemon_state(now)
    daemon = Text("│", style=p.dim)
    if state == "running":
        hb = now - (room.status_received or now)
        up = (room.status or {}).get("uptime_s")
        daemon.append(f" daemon ok hb {hb:.1f}s", style=p.ok)
        segs.append((daemon, keep))
        if isinstance(up, int | float):
            segs.append((Text(f" up {fmt_age(up)}", style=p.dim), 1))
        segs.append((Text(" "), keep))
    else:
        word = {"stale": "daemon STALE", "offline": "daemon OFFLINE", "stopped": "daemon STOPPED",
                "unknown": "daemon ?"}.get(state, f"daemon {state}")
        if state == "stale" and room.status_received is not None:
            word += f" {fmt_age(now - room.status_received)}"
        daemon.append(f" {word} ", style=alarm_style(p, "medium"))
        segs.append((daemon, keep))
    sstate, depth, dead = room.sync_summary()
    sync_style = p.ok if sstate == "online" else (p.dim if sstate == "n/a" else alarm_style(p, "low"))
    sync = Text("│", style=p.dim)
    sync.append(f" sync {sstate} q {depth} dead {dead} ", style=sync_style if not dead else alarm_style(p, "low"))
    segs.append((sync, 3))
    op = Text("│", style=p.dim)
    op.append(f" op {operator} ", style=p.fg)
    segs.append((op, 2))
    flags = ("NIGHT " if night else "") + ("LARGE " if large else "")
    if flags:
        segs.append((Text(flags, style=p.dim), 0))
    reply = room.replies[-1] if room.replies else None
    clock = clock_text(time.time() if wall is None else wall)
    room_w = max(0, width - len(clock) - 1)
    if reply is not None and now - reply.received < REPLY_SHOW_S:
        answer = Text("│", style=p.dim)
        msg = f" {reply.op or 'cmd'}: {'ok' if reply.ok else 'REFUSED'} {reply.reason}"
        if reply.affected:
            msg += " (" + ",".join(reply.affected) + ")"
        answer.append(msg + " ", style=p.ok if reply.ok else alarm_style(p, "medium"))
        segs.append((answer, keep))
        for rank in range(keep):  # make room for the answer: flags, uptime, operator, sync, in that order
            if sum(t.cell_len for t, _ in segs) <= room_w:
                break
            segs = [(t, r) for t, r in segs if r != rank]
    t = Text().join(seg for seg, _ in segs)
    t.truncate(room_w, overflow="ellipsis")
    t.append(" " * max(0, room_w - t.cell_len))
    t.append(" " + clock, style=p.fg)
    return t


def stale_banner(room: RoomView, width: int, now: float, p: Palette = DAY) -> Text:
    """The banner that replaces live numbers when the broker or the daemon went silent."""
    if not room.broker_connected:
        why = "no connection to the room's broker" + (f" ({room.broker_error})" if room.broker_error else "")
    else:
        state = room.daemon_state(now)
        since = fmt_age(now - room.status_received) if room.status_received else "ever"
        why = {"stale": f"no heartbeat from the daemon for {since}", "offline": "the daemon is offline",
               "stopped": "the daemon has stopped", "unknown": "waiting for the daemon"}.get(state, state)
    t = Text(truncate(f" STALE — {why}: numbers hidden, do not rely on this screen ", width).center(width),
             style=f"bold {p.fg} on {p.stale}")
    return t


# ------------------------------------------------------------------ guest view

def beat_row(beats: object, end_index: int, n_shown: int, width: int, p: Palette = DAY) -> Text:
    """Beat labels (N, V, S, ...) under the columns of `braille.strip` where their R waves are drawn."""
    chars = [" "] * width
    ncols = width * 2
    spp = max(1, int(np.ceil(n_shown / ncols))) if n_shown else 1
    first = end_index - n_shown
    for idx, label in beats:  # type: ignore[attr-defined]
        j = idx - first
        if 0 <= j < n_shown:
            cell = (ncols * spp - n_shown + j) // spp // 2
            if 0 <= cell < width:
                chars[cell] = label
    t = Text()
    for ch in chars:
        t.append(ch, style=alarm_style(p, "medium") if ch not in (" ", "N") else p.dim)
    return t


def guest_detail(room: RoomView, g: GuestView, width: int, height: int, now: float, p: Palette = DAY,
                 wall: float | None = None) -> Text:
    """Trends with threshold bands, a large recent ECG strip and the alarm history of one guest."""
    wall = time.time() if wall is None else wall
    lines: list[Text] = []
    head = Text()
    head.append(f" {g.mat} {g.name} ", style=f"bold reverse {p.fg}")
    top = g.top_alarm()
    head.append("  " + alarm_badge(top, now), style=alarm_style(p, top.priority) if top else p.ok)
    head.append("   esc: back   a ack  p pause  o off", style=p.dim)
    lines.append(_pad(head, width))
    stale = room.room_stale(now) or g.stale(now)
    if stale:
        lines.append(stale_banner(room, width, now, p) if room.room_stale(now)
                     else _pad(Text(" STALE: no data from this guest for more than 3 s", style=f"bold on {p.stale}"),
                               width))
    hist_h = max(3, height // 4)  # lines kept free for the history
    ecg_h = max(3, height // 4)
    trend_h = max(1, (height - len(lines) - hist_h - ecg_h - 2 - 4) // 4)
    t0 = min((tr[0][0] for tr in g.trends.values() if tr), default=wall - 60)
    t0 = min(t0, wall - 60)
    label_w = 24
    plot_w = max(10, width - label_w - 1)
    defaults = {"hr": (30.0, 160.0), "spo2": (75.0, 100.0), "sbp": (60.0, 200.0), "qtc": (300.0, 600.0)}
    names = {"hr": "HR /min", "spo2": "SpO2 %", "sbp": "SBP mmHg", "qtc": "QTc ms"}
    for m in ("hr", "spo2", "sbp", "qtc"):
        pts = g.trends[m]
        tt = np.array([x[0] for x in pts]) if pts else np.empty(0)
        vv = np.array([x[1] for x in pts]) if pts else np.empty(0)
        lo, hi = defaults[m]
        if len(vv):
            lo, hi = min(lo, float(np.nanmin(vv)) - 5), max(hi, float(np.nanmax(vv)) + 5)
        band = g.bands.get(m, (None, None, None, None))
        rows = braille.trend(tt, vv, t0, wall, plot_w, trend_h, lo, hi, tuple(b for b in band if b is not None))
        cur = g.value(m) if not stale else None
        for i, row in enumerate(rows):
            lab = Text()
            if i == 0:
                lab.append(f"{names[m]:<9}", style=p.dim)
                lvl = band_level(cur, band)
                lab.append(f"{cur:>5.0f}" if cur is not None else "   --",
                           style=alarm_style(p, lvl) if lvl else f"bold {p.fg}")
            elif i == 1 or (trend_h == 1 and i == 0):
                lim = "/".join("-" if b is None else f"{b:g}" for b in band)
                lab.append(f" lim {lim}", style=p.dim)
            lab = _pad(lab, label_w)
            lab.append(" ")
            lab.append(row, style=p.ecg)
            lines.append(lab)
        if trend_h == 1:
            pass
    span = Text(f"{'':{label_w}} {clock_text(t0)}", style=p.dim)
    span.append(" " * max(1, plot_w - 16))
    span.append(clock_text(wall), style=p.dim)
    lines.append(_pad(span, width))
    # the ECG strip
    e = g.ecg
    lines.append(_pad(Text(f" ECG (last {min(8.0, len(e.samples) / e.fs if e.fs else 0):.0f} s)  rhythm "
                           f"{g.rhythm or '--'}  beats {g.beats}", style=p.dim), width))
    if e.fs and e.received is not None and now - e.received <= 3.0 and not stale:
        n = int(8 * e.fs)
        shown = e.samples[-n:]
        for row in braille.strip(shown, width, ecg_h):
            lines.append(Text(row, style=p.ecg))
        if e.beats:
            lines.append(beat_row(e.beats, e.end_index, len(shown), width, p))
    else:
        for _ in range(ecg_h):
            lines.append(Text("\u2800" * width))
    # alarm history: fills the rest; when it does not fit, low-priority transitions make room first
    lines.append(_pad(Text(" alarm history (newest first)", style=f"bold {p.fg}"), width))
    room_left = max(1, height - len(lines))
    hist = list(g.history)
    if len(hist) > room_left:
        keep = [e for e in hist if e.priority != "low" or e.operator or e.event == "escalated"]
        hist = keep if len(keep) >= room_left else hist
    hist = hist[-room_left:]
    for ev in reversed(hist):
        t = Text()
        t.append(f" {clock_text(ev.wall)} ", style=p.dim)
        t.append(f"{PRIORITY_WORD.get(ev.priority, '?'):<4}", style=alarm_style(p, ev.priority))
        t.append(f" {ev.condition} {ev.event}", style=f"bold {p.fg}")
        if ev.operator:
            t.append(f" by {ev.operator}", style=p.fg)
        if ev.event == "escalated":
            d = ev.detail
            t.append(f" {d.get('step')} {d.get('contact') or '-'} via {d.get('channel')}: {d.get('outcome')}", style=p.fg)
        elif ev.reason:
            t.append(f" ({ev.reason})", style=p.dim)
        lines.append(_pad(t, width))
    if not hist:
        lines.append(_pad(Text("  none yet", style=p.dim), width))
    while len(lines) < height:
        lines.append(Text(" " * width))
    return Text("\n").join(lines[:height])
