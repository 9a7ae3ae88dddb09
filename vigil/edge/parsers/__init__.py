"""Pure device parsers: bytes in, items (vigil.edge.parsers.items) out, ParseError on bad bytes."""
