"""pyvirtrpc.scaled reads sizes as virsh does, and percentages.

Every scaled value below is also given to a real ``virsh domblkthreshold`` (test driver):
virsh parses the value before calling virDomainSetBlockThreshold, which the test driver
does not support. For a value we accept, virsh's debug log shows the number of bytes it
passed to the API; for a value we refuse, virsh prints exactly our error lines.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from realdaemons import LibvirtdTestDriver, tool, virsh_env

from pyvirtrpc.scaled import (
    ULLONG_MAX,
    Percent,
    ValueFormatError,
    parse_percent,
    parse_scaled,
    parse_threshold,
)

KiB, MiB, GiB, TiB, PiB, EiB = (1024**n for n in range(1, 7))

ACCEPTED = [
    ("0", 0),
    ("1", 1),
    ("20971520", 20971520),
    (" 10", 10),  # strtoull skips leading white space...
    ("\t+10", 10),  # ... and takes a plus sign
    ("007", 7),
    ("1b", 1),
    ("1B", 1),
    ("2byte", 2),
    ("3BYTES", 3),
    ("1k", KiB),
    ("1K", KiB),
    ("1KiB", KiB),
    ("1kib", KiB),
    ("1KIB", KiB),
    ("1kB", 1000),
    ("1KB", 1000),
    ("1kb", 1000),
    ("20M", 20 * MiB),
    ("20m", 20 * MiB),
    ("20MiB", 20 * MiB),
    ("20MB", 20_000_000),
    ("20Mb", 20_000_000),  # a megabyte, not a megabit
    ("3G", 3 * GiB),
    ("3GiB", 3 * GiB),
    ("3GB", 3 * 10**9),
    ("2T", 2 * TiB),
    ("2TB", 2 * 10**12),
    ("2P", 2 * PiB),
    ("2PB", 2 * 10**15),
    ("1e", EiB),
    ("15E", 15 * EiB),
    ("18EB", 18 * 10**18),
    ("0E", 0),
    ("18446744073709551615", ULLONG_MAX),
    ("18446744073709551615b", ULLONG_MAX),
    ("16777215T", 16777215 * TiB),
]

BAD_SUFFIX = "invalid argument: unknown suffix '{}'"
REFUSED = [
    ("", None),
    ("M", None),  # no digits
    ("-1", None),
    (" -0", None),
    ("+-1", None),
    ("- 1", None),
    ("18446744073709551616", None),  # above 2**64 - 1: strtoull's ERANGE
    ("99999999999999999999999", None),
    ("1X", BAD_SUFFIX.format("X")),
    ("1 ", BAD_SUFFIX.format(" ")),
    ("1 M", BAD_SUFFIX.format(" M")),
    ("0x10", BAD_SUFFIX.format("x10")),
    ("1.5M", BAD_SUFFIX.format(".5M")),
    ("1bb", BAD_SUFFIX.format("bb")),
    ("1iB", BAD_SUFFIX.format("iB")),
    ("1Mi", BAD_SUFFIX.format("Mi")),
    ("1MiBs", BAD_SUFFIX.format("MiBs")),
    ("1kbyte", BAD_SUFFIX.format("kbyte")),
    ("1Z", BAD_SUFFIX.format("Z")),
    ("1\u212a", BAD_SUFFIX.format("\u212a")),  # KELVIN SIGN: not an ASCII k
    ("80%", BAD_SUFFIX.format("%")),  # virsh has no percentages
    ("16E", "numerical overflow: value too large: 16E"),
    ("16EiB", "numerical overflow: value too large: 16EiB"),
    ("18446744073709551615k", "numerical overflow: value too large: 18446744073709551615k"),
    ("16777216T", "numerical overflow: value too large: 16777216T"),
    ("19EB", "numerical overflow: value too large: 19EB"),
]


@pytest.mark.parametrize(("text", "size"), ACCEPTED)
def test_accepted(text: str, size: int) -> None:
    assert parse_scaled(text) == size
    assert parse_threshold(text) == size


@pytest.mark.parametrize(("text", "reason"), REFUSED)
def test_refused_with_virsh_messages(text: str, reason: str | None) -> None:
    with pytest.raises(ValueFormatError) as error:
        parse_scaled(text)
    assert str(error.value) == (
        f"Scaled numeric value '{text}' for <threshold> option is malformed or out of range"
    )
    assert error.value.reason == reason


def test_option_name_in_message() -> None:
    with pytest.raises(ValueFormatError, match=r"^Scaled numeric value 'x' for <size> option"):
        parse_scaled("x", "size")


def domblkthreshold(daemon: LibvirtdTestDriver, value: str) -> tuple[list[str], str]:
    """virsh's error lines, and its debug log, for ``domblkthreshold test vda VALUE``."""
    env = virsh_env()
    env.update(
        LIBVIRT_DEBUG="4",
        LIBVIRT_LOG_FILTERS="1:libvirt.domain",
        LIBVIRT_LOG_OUTPUTS="1:stderr",
    )
    result = subprocess.run(
        [tool("virsh"), "-c", daemon.uri, "domblkthreshold", "test", "vda", value],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return errors, result.stderr


@pytest.mark.libvirtd
def test_same_as_real_virsh(libvirtd_test: LibvirtdTestDriver) -> None:
    unsupported = (
        "error: this function is not supported by the connection driver: virDomainSetBlockThreshold"
    )
    for text, size in ACCEPTED:
        errors, log = domblkthreshold(libvirtd_test, text)
        assert errors == [unsupported], text
        passed = re.findall(r"dev='vda' threshold=(\d+) flags=0x0", log)
        assert passed == [str(size)], text
    for text, _ in REFUSED:
        errors, log = domblkthreshold(libvirtd_test, text)
        with pytest.raises(ValueFormatError) as error:
            parse_scaled(text)
        expected = [f"error: {error.value}"]
        if error.value.reason is not None:
            expected.append(f"error: {error.value.reason}")
        assert errors == expected, text
        assert "threshold=" not in log


# ----------------------------------------------------------------------- percentages

PERCENTS = [
    ("0%", 0),
    ("80%", 80_000),
    ("87.5%", 87_500),
    ("87.50%", 87_500),
    ("87.125%", 87_125),
    ("0.001%", 1),
    ("007.5%", 7_500),
    ("100%", 100_000),
    ("100.000%", 100_000),
]


@pytest.mark.parametrize(("text", "thousandths"), PERCENTS)
def test_percent(text: str, thousandths: int) -> None:
    assert parse_percent(text) == thousandths
    assert parse_threshold(text) == Percent(thousandths)


MALFORMED = (
    "Percentage '{}' for <threshold> option is malformed: expected digits, optionally a "
    "point and up to three decimals, then '%', such as 80% or 87.5%"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("87.1255%", "Percentage '87.1255%' for <threshold> option has more than three decimals"),
        ("1.0000%", "Percentage '1.0000%' for <threshold> option has more than three decimals"),
        ("100.001%", "Percentage '100.001%' for <threshold> option is above 100%"),
        ("101%", "Percentage '101%' for <threshold> option is above 100%"),
        ("%", MALFORMED.format("%")),
        ("-5%", MALFORMED.format("-5%")),
        ("+5%", MALFORMED.format("+5%")),
        (".5%", MALFORMED.format(".5%")),
        ("5.%", MALFORMED.format("5.%")),
        ("5 %", MALFORMED.format("5 %")),
        (" 5%", MALFORMED.format(" 5%")),
        ("5%%", MALFORMED.format("5%%")),
        ("1e2%", MALFORMED.format("1e2%")),
        ("\u0665%", MALFORMED.format("\u0665%")),  # ARABIC-INDIC DIGIT FIVE
    ],
)
def test_percent_refused(text: str, message: str) -> None:
    with pytest.raises(ValueFormatError) as error:
        parse_threshold(text)
    assert str(error.value) == message
    assert error.value.reason is None


def test_percent_of_a_size() -> None:
    assert Percent(80_000).of(20 * MiB) == 16 * MiB
    assert Percent(87_500).of(1000) == 875
    assert Percent(1).of(99_999) == 0  # rounded down
    assert Percent(33_333).of(3 * GiB) == 3 * GiB * 33_333 // 100_000
    assert Percent(100_000).of(ULLONG_MAX) == ULLONG_MAX
    assert [str(Percent(t)) for t in (80_000, 87_500, 87_125, 1, 0, 100_000)] == [
        "80%",
        "87.5%",
        "87.125%",
        "0.001%",
        "0%",
        "100%",
    ]
