"""Rich `Text` line → Textual `Strip` without the generic content pipeline (the tile grid redraws 4×/s)."""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

_STYLES: dict[object, Style] = {}


def _style(spec: str | Style | None) -> Style:
    """Parsed style, cached (the renderers use a handful of style strings)."""
    if spec is None or spec == "":
        return Style.null()
    if isinstance(spec, Style):
        return spec
    st = _STYLES.get(spec)
    if st is None:
        st = _STYLES[spec] = Style.parse(spec)
    return st


def _combined(base: str | Style, span: str | Style) -> Style:
    key = (base, span)
    st = _STYLES.get(key)
    if st is None:
        st = _STYLES[key] = _style(base) + _style(span)
    return st


def text_strip(text: Text, width: int) -> Strip:
    """One line of `text` as a Strip of exactly `width` cells (spans must not overlap, as in the tile renderer)."""
    plain = text.plain
    base = text.style
    segs: list[Segment] = []
    pos = 0
    for sp in sorted(text.spans, key=lambda s: s.start):
        start = max(sp.start, pos)
        if start > pos:
            segs.append(Segment(plain[pos:start], _style(base)))
        if sp.end > start:
            segs.append(Segment(plain[start:sp.end], _combined(base, sp.style)))
        pos = max(pos, sp.end)
    if pos < len(plain):
        segs.append(Segment(plain[pos:], _style(base)))
    return Strip(segs).adjust_cell_length(width)
