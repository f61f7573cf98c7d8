"""String formats laid out as literal separators and choice slots, so that every value is valid by
construction: each field is a choice among its valid texts (month 01-12, day 01-28, ...), each hex
digit of a UUID a choice among 16. The ranges only narrow the format (a day of 01-28 is valid in
every month; years 1970-2037), which keeps every output valid for any reader of the format. Names
in emails, host names and URIs are chosen from short word lists (the model picks the word)."""

from __future__ import annotations

HEX = tuple("0123456789abcdef")


def _two(lo: int, hi: int) -> tuple[str, ...]:
    return tuple(f"{v:02d}" for v in range(lo, hi + 1))


YEAR = tuple(str(y) for y in range(1970, 2038))
DATE = [YEAR, "-", _two(1, 12), "-", _two(1, 28)]
TIME = [_two(0, 23), ":", _two(0, 59), ":", _two(0, 59)]
# each entry: a literal string, or a tuple of the texts a choice slot may take
FORMATS: dict[str, list[str | tuple[str, ...]]] = {
    "date": DATE,
    "time": [*TIME, "Z"],
    "date-time": [*DATE, "T", *TIME, "Z"],
    "uuid": [
        *(HEX,) * 8,
        "-",
        *(HEX,) * 4,
        "-",
        "4",
        *(HEX,) * 3,
        "-",
        ("8", "9", "a", "b"),
        *(HEX,) * 3,
        "-",
        *(HEX,) * 12,
    ],
}

WORDS = tuple(
    "alex info team mail admin hello sales support dev ops data user web app api docs shop news blog "
    "home cloud north river".split()
)
DOMAINS = tuple("example acme contoso initech globex umbrella stark wayne hooli vandelay".split())
TLDS = ("com", "org", "net", "io", "dev", "edu")
OCTET = tuple(str(v) for v in range(256))
FORMATS |= {
    "email": [WORDS, "@", DOMAINS, ".", TLDS],
    "hostname": [WORDS, ".", DOMAINS, ".", TLDS],
    "uri": [("https", "http"), "://", DOMAINS, ".", TLDS, "/", WORDS],
    "ipv4": [OCTET, ".", OCTET, ".", OCTET, ".", OCTET],
    "ipv6": [x for g in range(8) for x in ((":",) if g else ()) + (HEX,) * 4],
    "uri-reference": [("https", "http"), "://", DOMAINS, ".", TLDS, "/", WORDS],
    "regex": [("^[a-z]+$", "^[0-9]+$", "^.*$", "^[A-Za-z0-9_-]+$")],
    "duration": ["P", tuple(str(v) for v in range(31)), "DT", tuple(str(v) for v in range(24)), "H"],
}
