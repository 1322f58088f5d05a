"""Sizes written as virsh reads them (scaled integers), and percentages.

``parse_scaled`` accepts what ``virsh domblkthreshold`` accepts for its threshold, gives
the same number of bytes, and refuses what it refuses with the same messages:

- an unsigned decimal number (leading white space and ``+`` allowed, as by ``strtoull``;
  no ``-`` anywhere, no more than 2**64 - 1);
- then nothing (bytes), ``b``, ``byte`` or ``bytes``, or a unit letter ``k m g t p e`` alone
  or followed by ``iB`` (powers of 1024: ``M`` and ``MiB`` are both 1048576), or followed by
  ``B`` (powers of 1000: ``MB`` is 1000000). Letters are matched in either case, so ``m``,
  ``mib``, ``Mb`` and ``mB`` all work (and ``Mb`` is a megabyte, not a megabit).

``parse_percent`` reads ``80%`` or ``87.5%`` (up to three decimals) as thousandths of a
percent; ``parse_threshold`` takes either form, as ``pyvirtrpc threshold`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ULLONG_MAX = 2**64 - 1
PERCENT_SCALE = 100_000
"""Thousandths of a percent in a whole."""

_UNITS = "kmgtpe"  # k = base**1 ... e = base**6
_NUMBER = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]*)")  # what strtoull(..., 10) reads
_PERCENT = re.compile(r"([0-9]+)(?:\.([0-9]+))?%")


class ValueFormatError(ValueError):
    """A value refused, in virsh's words.

    ``str(error)`` is the first line virsh prints after ``error: ``; ``reason``, when not
    None, is the second one (libvirt's own error, such as ``invalid argument: unknown
    suffix 'X'``).
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def _ascii_lower(text: str) -> str:
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in text)


def _scale(suffix: str) -> int:
    """The multiplier of a unit suffix; ValueError(reason) if there is no such unit."""
    folded = _ascii_lower(suffix)
    if folded in ("", "b", "byte", "bytes"):
        return 1
    if len(folded) == 1 or folded[1:] == "ib":
        base = 1024
    elif len(folded) == 2 and folded[1] == "b":
        base = 1000
    else:
        raise ValueError(f"invalid argument: unknown suffix '{suffix}'")
    power = _UNITS.find(folded[0]) + 1
    if power == 0:
        raise ValueError(f"invalid argument: unknown suffix '{suffix}'")
    return int(base**power)


def parse_scaled(text: str, option: str = "threshold") -> int:
    """Bytes from a scaled integer such as ``20M``, ``1GiB`` or ``500MB``.

    ValueFormatError as virsh's for option ``<option>`` if malformed or above 2**64 - 1.
    """
    refused = f"Scaled numeric value '{text}' for <{option}> option is malformed or out of range"
    number = _NUMBER.match(text)
    assert number is not None  # every part of the pattern may be empty
    sign, digits = number.groups()
    if sign == "-" or not digits or int(digits) > ULLONG_MAX:
        raise ValueFormatError(refused)
    value, suffix = int(digits), text[number.end() :]
    try:
        scale = _scale(suffix)
    except ValueError as exc:
        raise ValueFormatError(refused, str(exc)) from None
    if value and value > ULLONG_MAX // scale:
        raise ValueFormatError(refused, f"numerical overflow: value too large: {value}{suffix}")
    return value * scale


def parse_percent(text: str, option: str = "threshold") -> int:
    """Thousandths of a percent (0 to 100000) from ``80%``, ``87.5%``, ``0.125%``...

    ValueFormatError if malformed, with more than three decimals, or above 100%.
    """
    match = _PERCENT.fullmatch(text)
    what = f"Percentage '{text}' for <{option}> option"
    if match is None:
        raise ValueFormatError(
            f"{what} is malformed: expected digits, optionally a point and up to three "
            "decimals, then '%', such as 80% or 87.5%"
        )
    whole, decimals = match.group(1), match.group(2) or ""
    if len(decimals) > 3:
        raise ValueFormatError(f"{what} has more than three decimals")
    thousandths = int(whole) * 1000 + int(decimals.ljust(3, "0"))
    if thousandths > PERCENT_SCALE:
        raise ValueFormatError(f"{what} is above 100%")
    return thousandths


@dataclass(frozen=True, slots=True)
class Percent:
    """A fraction of a disk's size, in thousandths of a percent (0 to 100000)."""

    thousandths: int

    def of(self, size: int) -> int:
        """This fraction of ``size`` bytes, rounded down."""
        return size * self.thousandths // PERCENT_SCALE

    def __str__(self) -> str:
        whole, rest = divmod(self.thousandths, 1000)
        return f"{whole}.{rest:03d}".rstrip("0").rstrip(".") + "%"


def parse_threshold(text: str, option: str = "threshold") -> int | Percent:
    """VALUE of ``pyvirtrpc threshold``: bytes (an int), or a Percent if it ends in ``%``."""
    if text.endswith("%"):
        return Percent(parse_percent(text, option))
    return parse_scaled(text, option)
