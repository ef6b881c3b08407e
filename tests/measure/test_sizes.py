import pytest

from gpudiag.measure.sizes import parse_size
from gpudiag.units import fmt_bytes


@pytest.mark.parametrize("text, expected", [
    ("1.5G", 3 * 2**29),
    ("800M", 800 * 2**20),
    ("512K", 512 * 2**10),
    ("4096", 4096),
    ("2T", 2 * 2**40),
    ("1g", 2**30),
    ("1GB", 2**30),
    ("1GiB", 2**30),
    ("1 gib", 2**30),
    (" 300 MiB ", 300 * 2**20),
    ("0", 0),
    ("100B", 100),
    (".5G", 2**29),
    ("2.", 2),
])
def test_parse_size_accepts_binary_units(text, expected):
    assert parse_size(text) == expected


def test_parse_size_passes_numbers_through():
    assert parse_size(1234) == 1234
    assert parse_size(1.6) == 2


@pytest.mark.parametrize("text, words", [
    ("", "empty size"),
    ("   ", "empty size"),
    ("-1G", "negative"),
    ("1.5X", "cannot read size '1.5X'"),
    ("G", "cannot read size"),
    ("1.2.3M", "cannot read size"),
    ("lots", "cannot read size"),
    ("1e9", "cannot read size"),
])
def test_parse_size_rejects_with_a_clear_message(text, words):
    with pytest.raises(ValueError) as exc:
        parse_size(text)
    assert words in str(exc.value)


def test_bad_size_message_says_what_is_accepted():
    with pytest.raises(ValueError, match=r"K, M, G or T.*1\.5G, 800M"):
        parse_size("12 parsecs")


@pytest.mark.parametrize("value", [-5, float("nan"), float("inf"), True, None, [1]])
def test_parse_size_rejects_non_sizes(value):
    with pytest.raises(ValueError):
        parse_size(value)


def test_round_trip_of_formatted_sizes():
    for n in (2**20, 3 * 2**29, 5 * 2**40):
        assert parse_size(fmt_bytes(n).replace(" ", "")) == n
