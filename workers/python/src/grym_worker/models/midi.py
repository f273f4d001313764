"""A Standard MIDI File (format 0) of notes, written without third-party
code."""

from __future__ import annotations

import struct
from typing import Iterable

#: Ticks per quarter note.
DIVISION = 480


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def notes_to_midi(notes: Iterable[tuple[float, float, int, float]], tempo_bpm: float = 120.0) -> bytes:
    """One track of (start s, end s, MIDI pitch, velocity in [0, 1]) notes."""
    ticks_per_second = DIVISION * tempo_bpm / 60.0
    events: list[tuple[int, int, bytes]] = []
    for start, end, pitch, velocity in notes:
        on = int(round(start * ticks_per_second))
        off = max(on + 1, int(round(end * ticks_per_second)))
        level = max(1, min(127, int(round(velocity * 127))))
        # Offs sort before ons at the same tick, so repeated notes restart.
        events.append((on, 1, bytes([0x90, pitch & 0x7F, level])))
        events.append((off, 0, bytes([0x80, pitch & 0x7F, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    micros = int(round(60_000_000 / tempo_bpm))
    track = bytearray(b"\x00\xff\x51\x03" + micros.to_bytes(3, "big"))
    now = 0
    for tick, _, message in events:
        track += _varlen(tick - now) + message
        now = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, DIVISION)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)
