"""What a lead is, how its fields are normalised, and how a CSV or a scrape's results become leads.

A lead is a plain dict. The fields in ``KNOWN_FIELDS`` are the ones jobrunner reads and cleans; every
other key is the customer's own (a CRM id, a note, a column we have never heard of) and travels through
untouched, because the enriched file goes back into their tools and must still match their rows.

Reading and normalising are separate steps. ``read_csv`` and ``from_scrape_rows`` only map columns to
fields, so a lead keeps what the person gave until ``normalize`` runs; ``normalize`` never raises for a
bad value (one bad phone in 10,000 rows must not fail the job), it sets the field to None and says why in
``lead["_notes"]``. Only a file that cannot be read as leads at all is refused, with ``InvalidRequest``
and a message that tells a person what to fix in the file.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .errors import InvalidRequest

KNOWN_FIELDS = ("first_name", "last_name", "name", "title", "company", "city", "state", "zip", "phone", "email",
                "linkedin_url")
MAX_LEADS = 10_000

NOTES = "_notes"

# --- names -------------------------------------------------------------------------------------------------
# Compared without case and dots: "Dr." and "dr" are the same prefix.
_PREFIXES = frozenset({"dr", "mr", "mrs", "ms", "miss", "mx", "prof", "rev", "sir", "dame", "hon"})
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md", "dds", "dmd", "dvm", "esq", "cpa", "cfa",
                       "cfp", "mba", "rn", "jd", "pmp"})
# Words that belong to the family name that follows them ("van der Berg", "de la Cruz"); written in
# lowercase inside a name when we re-case one.
_PARTICLES = frozenset({"van", "von", "der", "den", "de", "del", "della", "da", "di", "du", "la", "le", "dos",
                        "das", "ter", "ten", "bin", "ibn", "al", "el", "st"})
_SUFFIX_SPELLING = {"phd": "PhD", "ii": "II", "iii": "III", "iv": "IV", "md": "MD", "dds": "DDS", "dmd": "DMD",
                    "dvm": "DVM", "cpa": "CPA", "cfa": "CFA", "cfp": "CFP", "mba": "MBA", "rn": "RN", "jd": "JD",
                    "pmp": "PMP"}


def _word_key(word: str) -> str:
    return word.lower().replace(".", "").rstrip(",")


def split_name(name: str) -> tuple[str | None, str | None]:
    """(first, last) of a full name: titles, suffixes and middle names dropped; "Smith, Jane" read as last
    name first; particles kept with the family name ("Jan van der Berg" -> Jan / van der Berg). A single
    word is a first name only."""
    head, comma, tail = name.partition(",")
    tail_words = tail.split()
    if comma and tail_words and any(_word_key(w) not in _SUFFIXES for w in tail_words):
        # "Smith, Jane Q." (a comma followed by only suffixes is "Jane Smith, Jr.")
        last_words = _strip_titles(head.split())
        first_words = _strip_titles(tail_words)
        first = first_words[0] if first_words else None
        return first, " ".join(last_words) or None
    words = _strip_titles(head.split())
    if not words:
        return None, None
    if len(words) == 1:
        return words[0], None
    start = len(words) - 1
    while start > 1 and _word_key(words[start - 1]) in _PARTICLES:
        start -= 1
    return words[0], " ".join(words[start:])


def _strip_titles(words: list[str]) -> list[str]:
    words = [w.rstrip(",") for w in words if w.rstrip(",")]
    while words and _word_key(words[0]) in _PREFIXES:
        words = words[1:]
    while words and _word_key(words[-1]) in _SUFFIXES:
        words = words[:-1]
    return words


def fix_case(name: str) -> str:
    """Title case for a name typed in ALL CAPS or all lowercase ("o'neil" -> "O'Neil", "MCDONALD" ->
    "McDonald", "jan van der berg" -> "Jan van der Berg"); a name in mixed case is the person's own
    spelling ("DeAngelo", "McKenzie") and is returned as it is."""
    if not (name.isupper() or name.islower()):
        return name
    words = name.split(" ")
    out = []
    for i, word in enumerate(words):
        stem = word.rstrip(".,")
        if i > 0 and stem.lower() in _SUFFIX_SPELLING:
            out.append(_SUFFIX_SPELLING[stem.lower()] + word[len(stem):])
        elif 0 < i < len(words) - 1 and _word_key(word) in _PARTICLES:
            out.append(word.lower())
        else:
            out.append(_cap_word(word))
    return " ".join(out)


def _cap_word(word: str) -> str:
    # Each part after a hyphen or an apostrophe starts a capital: Mary-Jane, O'Neil, D'Angelo.
    parts = re.split(r"([-'\u2019])", word.lower())
    out = []
    for part in parts:
        if len(part) > 2 and part.startswith("mc"):
            out.append("Mc" + part[2:].capitalize())
        else:
            out.append(part.capitalize())
    return "".join(out)


# --- phones, emails, zips, states, urls --------------------------------------------------------------------
_EXTENSION = re.compile(r"\s*[,;]?\s*(?:ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)
_PHONE_TEXT = re.compile(r"\+?[\d\s().\-/]+")
_NANP = re.compile(r"[2-9]\d{2}[2-9]\d{6}")  # area code and exchange never start with 0 or 1
_EMAIL = re.compile(r"[^@\s]+@(?:[^@\s.]+\.)+[^@\s.]{2,}")
_LINKEDIN = re.compile(r"https?://(?:www\.)?linkedin\.com/(.+)", re.IGNORECASE)


def e164(text: str) -> str | None:
    """The number in E.164 (``+15125550142``), or None when it is not a phone number.

    Without a country code it must be a valid US/Canada number (10 digits, or 11 starting with 1);
    with ``+`` the digits are kept as given (8 to 15 of them). Extensions are dropped: nobody dials them
    from a lead list, and carrier and DNC lookups take the main number.
    """
    text = _EXTENSION.sub("", text.strip())
    if text.startswith("+"):
        text = text.replace("(0)", "")  # "+44 (0)20 ...": the trunk 0 is not dialled from abroad
    if not _PHONE_TEXT.fullmatch(text):
        return None
    digits = re.sub(r"\D", "", text)
    if text.startswith("+") and not digits.startswith("1"):
        return "+" + digits if 8 <= len(digits) <= 15 and digits[0] != "0" else None
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return "+1" + digits if _NANP.fullmatch(digits) else None


def us_zip(text: str) -> str | None:
    """A 5-digit ZIP: ZIP+4 cut to 5, leading zeros a spreadsheet dropped put back ("2134" -> "02134")."""
    base, sep, plus4 = text.strip().replace(" ", "-").partition("-")
    if sep and not (len(plus4) == 4 and plus4.isdigit()):
        return None
    if not base.isdigit() or not base.isascii():
        return None
    if len(base) == 9 and not sep:  # ZIP+4 without its dash
        base = base[:5]
    return base.zfill(5) if 3 <= len(base) <= 5 else None


STATES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California", "CO": "Colorado",
    "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia", "FL": "Florida", "GA": "Georgia",
    "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas",
    "KY": "Kentucky", "LA": "Louisiana", "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts",
    "MI": "Michigan", "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana",
    "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico",
    "NY": "New York", "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington",
    "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
    "PR": "Puerto Rico", "GU": "Guam", "VI": "U.S. Virgin Islands", "AS": "American Samoa",
    "MP": "Northern Mariana Islands",
    # Canada shares +1 with the US, so its leads come in the same files.
    "AB": "Alberta", "BC": "British Columbia", "MB": "Manitoba", "NB": "New Brunswick",
    "NL": "Newfoundland and Labrador", "NS": "Nova Scotia", "NT": "Northwest Territories", "NU": "Nunavut",
    "ON": "Ontario", "PE": "Prince Edward Island", "QC": "Quebec", "SK": "Saskatchewan", "YT": "Yukon",
}


def _state_key(text: str) -> str:
    return " ".join(text.lower().replace(".", "").split())


_STATE_CODES = {_state_key(name): code for code, name in STATES.items()} | {
    "washington dc": "DC", "virgin islands": "VI", "us virgin islands": "VI", "québec": "QC",
}


def state_code(text: str) -> str | None:
    """The two-letter code of a US state (or territory, or Canadian province) given by code or by name in
    any case, else None."""
    key = _state_key(text)
    if len(key) == 2 and key.upper() in STATES:
        return key.upper()
    return _STATE_CODES.get(key)


def linkedin_url(text: str) -> str | None:
    """``https://www.linkedin.com/<path>`` for a LinkedIn URL with a path (http, or without www), else None."""
    match = _LINKEDIN.fullmatch(text.strip())
    return "https://www.linkedin.com/" + match.group(1) if match else None


# --- normalize ---------------------------------------------------------------------------------------------
def _as_text(field: str, value: Any, notes: list[str]) -> str | None:
    """A field's value as text with its spaces collapsed, or None when it is missing. Numbers come from
    JSON and spreadsheets (a zip 78701, a phone 5125550142.0) and are written without a fraction."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        notes.append(f"{field} {value!r} is not text")
        return None
    if isinstance(value, float):
        if math.isnan(value):  # a spreadsheet's empty cell
            return None
        value = int(value) if value.is_integer() else value
    return " ".join(str(value).split()) or None


def normalize(lead: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the lead with its known fields normalised; every other key kept exactly as it is.

    A field whose value is missing ("" or None) becomes None; a bad value becomes None and a note in
    ``_notes`` says what it was. Names are split from ``name`` when first or last name is missing, and
    ``name`` is built from both when it is missing. Normalising a normalised lead changes nothing.
    """
    out = dict(lead)
    old = lead.get(NOTES)
    notes: list[str] = []
    if isinstance(old, list):
        notes += old
    elif old not in (None, ""):  # a "_notes" column in a CSV holds text
        notes.append(str(old))
    text = {field: _as_text(field, lead[field], notes) for field in KNOWN_FIELDS if field in lead}
    out.update(text)

    full, first, last = (text.get(field) for field in ("name", "first_name", "last_name"))
    full, first, last = (fix_case(value) if value else None for value in (full, first, last))
    if full and not (first and last):
        split_first, split_last = split_name(full)  # after re-casing: "jan van der berg" -> van der Berg
        first = first or (fix_case(split_first) if split_first else None)
        last = last or (fix_case(split_last) if split_last else None)
    for field, value in (("name", full), ("first_name", first), ("last_name", last)):
        if value is not None:
            out[field] = value
    if not full and first and last:  # not one of them alone: a last name as `name` would split as a first
        out["name"] = f"{first} {last}"

    def check(field: str, clean: Callable[[str], str | None], problem: str) -> None:
        value = text.get(field)
        if value is None:
            return
        out[field] = clean(value)
        if out[field] is None:
            notes.append(f"{field} '{value}' {problem}")

    check("phone", e164, "is not a valid number")
    check("email", lambda v: v.lower() if _EMAIL.fullmatch(v.lower()) else None, "is not a valid email address")
    check("zip", us_zip, "is not a 5-digit US ZIP code")
    check("linkedin_url", linkedin_url, "is not a LinkedIn URL (https://www.linkedin.com/...)")
    state = text.get("state")
    if state:
        out["state"] = state_code(state) or state
    if notes or NOTES in lead:
        out[NOTES] = notes
    return out


def identity(lead: Mapping[str, Any]) -> bool:
    """Whether the lead has enough to be looked up: a valid phone, or a first and a last name (given, or
    split from ``name``)."""
    n = normalize(lead)
    return bool(n.get("phone") or (n.get("first_name") and n.get("last_name")))


# --- CSV ---------------------------------------------------------------------------------------------------
def _header_key(header: str) -> str:
    return re.sub(r"[\s_.\-]", "", header.lower())


ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "full name", "contact", "contact name", "fullName"),
    "first_name": ("first_name", "first name", "first", "firstname", "given name", "firstName"),
    "last_name": ("last_name", "last name", "last", "lastname", "surname", "family name", "lastName"),
    "title": ("title", "job title", "position", "role", "currentPosition.title"),
    "company": ("company", "company name", "organization", "organisation", "employer", "account name",
                "currentPosition.companyName"),
    "city": ("city", "town", "locality"),
    "state": ("state", "province", "region", "state/province", "state / province"),
    "zip": ("zip", "zip code", "zipcode", "postal code", "postcode"),
    "phone": ("phone", "phone number", "mobile", "mobile phone", "cell", "cell phone", "telephone", "direct dial"),
    "email": ("email", "e-mail", "email address", "work email"),
    "linkedin_url": ("linkedin_url", "linkedin url", "linkedin", "linkedin profile", "linkedin profile url",
                     "profile url", "navigationUrl"),
}
_HEADER_FIELDS = {_header_key(alias): field for field, aliases in ALIASES.items() for alias in aliases}


def header_field(header: str) -> str | None:
    """The known field a CSV header means ("E-mail Address" -> email), or None."""
    return _HEADER_FIELDS.get(_header_key(header))


def read_csv(data: bytes, *, max_rows: int = MAX_LEADS) -> list[dict[str, Any]]:
    """Leads from CSV bytes: known columns under their field name (empty cells left out), every other
    column under its header exactly as written with its cells exactly as they are. Values are not
    normalised here (``normalize`` does that).

    Comma, semicolon and tab files are read (the delimiter is sniffed from the first lines); blank rows
    are skipped. A file that cannot be read as leads raises ``InvalidRequest`` with what to fix.
    """
    text = _decode(data)
    if not text.strip():
        raise InvalidRequest("the CSV is empty")
    delimiter = _sniff(text)
    rows = _rows(text, delimiter)
    first = next(rows, None)
    if first is None:
        raise InvalidRequest("the CSV has no header row: every line is blank")
    header = first[1]
    columns = _columns(header)
    width = len(header)
    leads: list[dict[str, Any]] = []
    count = 0
    for line, cells in rows:
        count += 1
        if count > max_rows:
            continue  # counted, so the message can say how many there are
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            sep = "a tab" if delimiter == "\t" else f"'{delimiter}'"
            raise InvalidRequest(f"line {line} has {len(cells)} cells but there are {width} headers: put quotes "
                                 f"around cells that contain {sep}, or give the extra column a header")
        lead: dict[str, Any] = {}
        for i, key, known in columns:
            cell = cells[i] if i < len(cells) else ""
            if key is None:
                if cell.strip():
                    raise InvalidRequest(f"line {line}: column {i + 1} has a value but no header: "
                                         "give the column a header or delete it")
            elif not known or cell.strip():  # an unknown column keeps even its empty cells
                lead[key] = cell
        leads.append(lead)
    if count > max_rows:
        raise InvalidRequest(f"the CSV has {count:,} rows; at most {max_rows:,} leads per job: split the file")
    return leads


def _decode(data: bytes) -> str:
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = bom + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise InvalidRequest(f"the CSV is not UTF-8 text: line {line} has byte 0x{data[offset]:02X} at byte offset "
                             f"{offset} of the file; save it as \"CSV UTF-8\" and upload it again") from None


def _sniff(text: str) -> str:
    """The delimiter: what ``csv.Sniffer`` sees in the first lines if the header line has it, else the one
    the header line has most of (the sniffer gives up on a file whose rows disagree, which is just the
    file whose too-long row we must report), else a comma. Only the delimiter is taken from the sniffer:
    its other guesses (a ' quote char) misread names like O'Neil."""
    lines = text.lstrip("\r\n")[:65536].splitlines()
    header = lines[0] if lines else ""
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ""
    if delimiter and delimiter in header:
        return delimiter
    return max(",;\t", key=header.count)  # a tie (none at all) goes to the comma


def _rows(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, cells) of each row that is not blank. Strict quoting: a stray quote
    that would swallow the rest of the file into one cell is an error, not thousands of lost rows."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InvalidRequest(f"the CSV cannot be read from line {line} on ({e}): check the quotes there; a "
                                 "cell with a quote in it must be in quotes, with its quotes doubled") from None
        if any(c.strip() for c in cells):
            yield line, cells
        line = reader.line_num + 1


def _columns(header: list[str]) -> list[tuple[int, str | None, bool]]:
    """(index, key, known) of each column: key is the field a header maps to, else the header as
    written; None for a column without a header."""
    columns: list[tuple[int, str | None, bool]] = []
    seen: dict[str, tuple[str, int]] = {}
    for i, cell in enumerate(header):
        if not cell.strip():
            columns.append((i, None, False))
            continue
        field = header_field(cell)
        key = field or cell
        if key in seen:
            other, col = seen[key]
            if field:
                raise InvalidRequest(f"the headers '{other}' (column {col}) and '{cell}' (column {i + 1}) both "
                                     f"mean {field}: keep one of them, or rename the other")
            raise InvalidRequest(f"the header '{cell}' appears twice (columns {col} and {i + 1}): rename one")
        seen[key] = (cell, i + 1)
        columns.append((i, key, field is not None))
    fields = {key for _, key, known in columns if known}
    if not (fields & {"name", "phone", "email", "linkedin_url"} or {"first_name", "last_name"} <= fields):
        found = ", ".join(f"'{h}'" for h in header if h.strip()) or "none"
        understood = ", ".join(f"'{h}' ({header_field(h)})" for h in header if h.strip() and header_field(h))
        raise InvalidRequest(
            f"none of the headers identifies a person: found {found}; understood {understood or 'none of them'}. "
            "Add a column for name (or first name and last name), phone, email or LinkedIn URL; "
            "the first line of the file must be the column headers")
    return columns


# --- scrape results ----------------------------------------------------------------------------------------
_COUNTRIES = frozenset({"united states", "united states of america", "usa", "us", "canada"})
_METRO = re.compile(r"(?:Greater (.+?)(?: Metropolitan| Metro)? Area|(.+?) Metropolitan Area)", re.IGNORECASE)


def place(region: str) -> tuple[str | None, str | None]:
    """(city, state code) of a LinkedIn ``geoRegion``: "Austin, Texas, United States" -> (Austin, TX),
    "Texas, United States" -> (None, TX), "Greater Denver Area" -> (Denver, None). A region outside the US
    and Canada, or one we cannot read, gives (None, None)."""
    parts = [p.strip() for p in region.split(",") if p.strip()]
    if parts and parts[-1].lower() in _COUNTRIES:
        parts = parts[:-1]
    if not parts:
        return None, None
    state = state_code(parts[-1])
    if state:
        return (parts[-2] if len(parts) >= 2 else None), state
    metro = _METRO.fullmatch(parts[0]) if len(parts) == 1 else None
    if metro:
        return metro.group(1) or metro.group(2), None
    return None, None


def from_scrape_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Leads from a scrape job's results rows (values as the search gave them, not normalised); the
    profile's ``headline`` and ``geoRegion`` are kept as extra columns."""
    leads = []
    for row in rows:
        position = row.get("currentPosition")
        if isinstance(position, list):  # some responses give a list of current positions
            position = position[0] if position else None
        if not isinstance(position, Mapping):
            position = {}
        region = row.get("geoRegion")
        city, state = place(region) if isinstance(region, str) else (None, None)
        fields = {
            "name": row.get("fullName"),
            "first_name": row.get("firstName"),
            "last_name": row.get("lastName"),
            "title": position.get("title") or row.get("title"),
            "company": position.get("companyName"),
            "city": city,
            "state": state,
            "linkedin_url": row.get("navigationUrl"),
            "headline": row.get("headline"),
            "geoRegion": region,
        }
        leads.append({key: value for key, value in fields.items() if value not in (None, "")})
    return leads
