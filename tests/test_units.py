"""gpudiag.units: one formatter per kind of value, the same words in every output."""

from __future__ import annotations

import ast
import pathlib

import pytest

from gpudiag import units

GIB, MIB, KIB = 2**30, 2**20, 2**10


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (500, "500 B"), (1023, "1023 B"), (1023.6, "1 KiB"), (1024, "1 KiB"), (1536, "1.5 KiB"),
    (3 * MIB, "3 MiB"), (3.2 * MIB, "3.2 MiB"), (2.999 * MIB, "3.0 MiB"), (512 * MIB, "512 MiB"),
    (150.04 * MIB, "150 MiB"), ((1024 - 0.01) * MIB, "1 GiB"), (1.2 * GIB, "1.2 GiB"), (7.8 * GIB, "7.8 GiB"),
    (80 * GIB, "80 GiB"), (79.6 * GIB, "79.6 GiB"), (-1.5 * MIB, "-1.5 MiB"), (-0.2, "0 B"), (2**60, "1024 PiB"),
])
def test_bytes_in_the_largest_binary_unit_that_fits(n, text):
    assert units.fmt_bytes(n) == text


@pytest.mark.parametrize("bad", [None, "n/a", True, float("nan"), float("inf"), [1], {}])
def test_what_is_not_a_number_is_missing(bad):
    for fn in (units.fmt_bytes, units.fmt_byte_rate, units.fmt_pct, units.fmt_duration, units.fmt_rate):
        assert fn(bad) == "n/a"
        assert fn(bad, missing="unknown") == "unknown"


def test_percentages_durations_rates():
    assert units.fmt_pct(0.444) == "44 %" and units.fmt_pct(0.045, 1) == "4.5 %" and units.fmt_pct(1) == "100 %"
    assert [units.fmt_duration(s) for s in (40, 14 * 60, 2.5 * 3600, 3 * 86400)] == \
        ["40 s", "14 minutes", "2.5 hours", "3.0 days"]
    assert [units.fmt_rate(x) for x in (41.27, 22.0, 165.2, 0.04523, -3.14159)] == \
        ["41.3", "22.0", "165", "0.0452", "-3.14"]
    assert units.fmt_byte_rate(300) == "300 B/s" and units.fmt_byte_rate(12 * MIB) == "12 MiB/s"


def test_units_is_a_leaf():
    """Every layer may use it, so it imports nothing from gpudiag."""
    tree = ast.parse(pathlib.Path(units.__file__).read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
        [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("gpudiag")]
