"""Leads: the normalisation rules as tables, ``read_csv`` on real-looking files and every way a file is
refused, and ``from_scrape_rows`` on what the sandbox's search really returns."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrunner.errors import InvalidRequest
from jobrunner.leads import KNOWN_FIELDS, MAX_LEADS, from_scrape_rows, identity, normalize, read_csv
from jobrunner.sandbox.data import CITIES, search_page


# --- names -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lead", "first", "last", "name"),
    [
        ({"name": "Jane Smith"}, "Jane", "Smith", "Jane Smith"),
        ({"name": "  Jane   Smith "}, "Jane", "Smith", "Jane Smith"),
        ({"name": "Dr. Jane Q. Smith Jr."}, "Jane", "Smith", "Dr. Jane Q. Smith Jr."),
        ({"name": "Mrs Mary Ann Jones"}, "Mary", "Jones", "Mrs Mary Ann Jones"),
        ({"name": "Prof. Dr. Hans Becker"}, "Hans", "Becker", "Prof. Dr. Hans Becker"),
        ({"name": "John Smith III"}, "John", "Smith", "John Smith III"),
        ({"name": "Jane Smith, PhD, MD"}, "Jane", "Smith", "Jane Smith, PhD, MD"),
        ({"name": "Jane Smith, Jr."}, "Jane", "Smith", "Jane Smith, Jr."),
        ({"name": "Smith, Jane"}, "Jane", "Smith", "Smith, Jane"),
        ({"name": "Smith, Jane Q."}, "Jane", "Smith", "Smith, Jane Q."),
        ({"name": "Smith Jr., Dr. Jane"}, "Jane", "Smith", "Smith Jr., Dr. Jane"),
        ({"name": "JANE SMITH"}, "Jane", "Smith", "Jane Smith"),
        ({"name": "jane smith"}, "Jane", "Smith", "Jane Smith"),
        ({"name": "john smith iii"}, "John", "Smith", "John Smith III"),
        ({"name": "PATRICK O'NEIL"}, "Patrick", "O'Neil", "Patrick O'Neil"),
        ({"name": "ronald mcdonald"}, "Ronald", "McDonald", "Ronald McDonald"),
        ({"name": "MARY-JANE SMITH-JONES"}, "Mary-Jane", "Smith-Jones", "Mary-Jane Smith-Jones"),
        ({"name": "jan van der berg"}, "Jan", "van der Berg", "Jan van der Berg"),
        ({"name": "Jan van der Berg"}, "Jan", "van der Berg", "Jan van der Berg"),
        ({"name": "Maria De La Cruz"}, "Maria", "De La Cruz", "Maria De La Cruz"),
        ({"name": "JOHN LE"}, "John", "Le", "John Le"),  # a particle that is the whole family name
        ({"name": "josé garcía"}, "José", "García", "José García"),
        ({"name": "Tyrone DeAngelo"}, "Tyrone", "DeAngelo", "Tyrone DeAngelo"),
        ({"name": "JANE smith"}, "Jane", "Smith", "JANE smith"),  # the name is mixed case; its parts are not
        ({"name": "Jane DeAngelo-smith"}, "Jane", "DeAngelo-smith", "Jane DeAngelo-smith"),
        ({"first_name": "JANE", "last_name": "MCDONALD"}, "Jane", "McDonald", "Jane McDonald"),
        ({"first_name": "jane", "last_name": "van der berg"}, "Jane", "Van der Berg", "Jane Van der Berg"),
        ({"first_name": "  Jane ", "last_name": " Smith  "}, "Jane", "Smith", "Jane Smith"),
        ({"first_name": "Janie", "last_name": "Smith", "name": "Jane Smith"}, "Janie", "Smith", "Jane Smith"),
        ({"first_name": "Janie", "name": "Jane Smith"}, "Janie", "Smith", "Jane Smith"),
        ({"first_name": "Jane", "name": ""}, "Jane", None, None),
        ({"last_name": "Smith"}, None, "Smith", None),
        ({"name": "Cher"}, "Cher", None, "Cher"),
    ],
)
def test_names(lead: dict[str, Any], first: str | None, last: str | None, name: str | None) -> None:
    out = normalize(lead)
    assert (out.get("first_name"), out.get("last_name"), out.get("name")) == (first, last, name)
    assert "_notes" not in out


# --- phones ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("(512) 555-0142", "+15125550142"),
        ("512.555.0142", "+15125550142"),
        ("512-555-0142", "+15125550142"),
        ("5125550142", "+15125550142"),
        (" 512 555 0142 ", "+15125550142"),
        ("1 (512) 555-0142", "+15125550142"),
        ("1-512-555-0142", "+15125550142"),
        ("+1 512 555 0142", "+15125550142"),
        ("+1 512 555 0142 x12", "+15125550142"),
        ("512-555-0142 ext. 12", "+15125550142"),
        ("512-555-0142 Ext 7", "+15125550142"),
        ("(512) 555-0142x1234", "+15125550142"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+44 (0)20 7946 0958", "+442079460958"),
        ("+49 30 901820", "+4930901820"),
        ("+15125550142", "+15125550142"),
        (5125550142, "+15125550142"),
        (15125550142, "+15125550142"),
        (5125550142.0, "+15125550142"),
    ],
)
def test_phones(phone: Any, expected: str) -> None:
    out = normalize({"phone": phone})
    assert out["phone"] == expected
    assert "_notes" not in out


@pytest.mark.parametrize(
    ("phone", "shown"),
    [
        ("555-0142", "555-0142"),  # no area code
        ("12-34", "12-34"),
        ("1-800-FLOWERS", "1-800-FLOWERS"),
        ("call me", "call me"),
        ("512555014", "512555014"),  # 9 digits
        ("25125550142", "25125550142"),  # 11 digits not starting with 1
        ("0125550142", "0125550142"),  # no US area code starts with 0
        ("+1 512 555 014", "+1 512 555 014"),
        ("+44 12", "+44 12"),
        ("512+555+0142", "512+555+0142"),
        (5550142, "5550142"),
    ],
)
def test_bad_phones(phone: Any, shown: str) -> None:
    out = normalize({"phone": phone, "crm_id": 7})
    assert out["phone"] is None
    assert out["_notes"] == [f"phone '{shown}' is not a valid number"]
    assert out["crm_id"] == 7


@pytest.mark.parametrize("missing", [None, "", "   "])
def test_missing_values_are_none_without_a_note(missing: Any) -> None:
    out = normalize({field: missing for field in KNOWN_FIELDS})
    assert all(out[field] is None for field in KNOWN_FIELDS)
    assert "_notes" not in out


# --- email, zip, state, linkedin, plain text ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("email", "expected"),
    [
        (" Jane.Smith@Example.COM ", "jane.smith@example.com"),
        ("jane+leads@mail.example.co.uk", "jane+leads@mail.example.co.uk"),
        ("jane@example", None),
        ("jane@", None),
        ("@example.com", None),
        ("jane smith@example.com", None),
        ("jane@@example.com", None),
        ("not an email", None),
        ("jane@example.c", None),
    ],
)
def test_emails(email: str, expected: str | None) -> None:
    out = normalize({"email": email})
    assert out["email"] == expected
    if expected is None:
        assert out["_notes"] == [f"email '{email.strip()}' is not a valid email address"]


@pytest.mark.parametrize(
    ("zip_code", "expected"),
    [
        ("78701", "78701"),
        (" 78701 ", "78701"),
        ("78701-1234", "78701"),
        ("787011234", "78701"),
        ("2134", "02134"),  # a spreadsheet ate the leading zero
        (2134, "02134"),
        (78701, "78701"),
        (78701.0, "78701"),
        ("2134-1234", "02134"),
        ("501", "00501"),
        ("123456", None),
        ("12", None),
        ("7870A", None),
        ("78701-12", None),
        ("SW1A 1AA", None),
    ],
)
def test_zips(zip_code: Any, expected: str | None) -> None:
    out = normalize({"zip": zip_code})
    assert out["zip"] == expected
    if expected is None:
        assert out["_notes"] == [f"zip '{str(zip_code).strip()}' is not a 5-digit US ZIP code"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("TX", "TX"),
        ("tx", "TX"),
        (" Tx ", "TX"),
        ("Texas", "TX"),
        ("TEXAS", "TX"),
        ("new  york", "NY"),
        ("District of Columbia", "DC"),
        ("D.C.", "DC"),
        ("Puerto Rico", "PR"),
        ("Ontario", "ON"),
        ("  Atlantis ", "Atlantis"),  # unknown: kept, stripped
        ("ZZ", "ZZ"),
    ],
)
def test_states(state: str, expected: str) -> None:
    out = normalize({"state": state})
    assert out["state"] == expected
    assert "_notes" not in out


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.linkedin.com/in/jane-smith", "https://www.linkedin.com/in/jane-smith"),
        (" http://www.linkedin.com/in/jane-smith/ ", "https://www.linkedin.com/in/jane-smith/"),
        ("https://linkedin.com/in/jane-smith", "https://www.linkedin.com/in/jane-smith"),
        ("http://linkedin.com/in/jane-smith", "https://www.linkedin.com/in/jane-smith"),
        ("https://www.linkedin.com/sales/lead/ACwAA123,NAME_SEARCH,xyz",
         "https://www.linkedin.com/sales/lead/ACwAA123,NAME_SEARCH,xyz"),
        ("linkedin.com/in/jane", None),
        ("https://www.linkedin.com.evil.example/in/jane", None),
        ("https://example.com/in/jane", None),
        ("https://www.linkedin.com/", None),
    ],
)
def test_linkedin_urls(url: str, expected: str | None) -> None:
    out = normalize({"linkedin_url": url})
    assert out["linkedin_url"] == expected
    if expected is None:
        assert out["_notes"] == [f"linkedin_url '{url.strip()}' is not a LinkedIn URL (https://www.linkedin.com/...)"]


def test_plain_text_fields_are_stripped_and_collapsed() -> None:
    out = normalize({"city": "  San   Antonio ", "title": "VP   of Sales\t", "company": " Acme,  Inc. "})
    assert out == {"city": "San Antonio", "title": "VP of Sales", "company": "Acme, Inc."}


def test_other_keys_are_kept_exactly_and_the_input_is_not_changed() -> None:
    lead = {"name": "JANE SMITH", "phone": "12-34", "CRM Id": " 0042 ", "Notes": "a, \"b\"", "nested": {"x": [1]}}
    before = json.dumps(lead)
    out = normalize(lead)
    assert json.dumps(lead) == before
    assert out["CRM Id"] == " 0042 " and out["Notes"] == "a, \"b\"" and out["nested"] == {"x": [1]}


def test_notes_are_added_to_existing_ones() -> None:
    assert normalize({"email": "x", "_notes": ["from scrape"]})["_notes"] == [
        "from scrape", "email 'x' is not a valid email address"]
    assert normalize({"email": "x", "_notes": "typed by a person"})["_notes"] == [
        "typed by a person", "email 'x' is not a valid email address"]
    assert normalize({"_notes": []}) == {"_notes": []}


@pytest.mark.parametrize(("field", "value"), [("city", True), ("phone", [5125550142]), ("name", {"first": "J"}),
                                              ("zip", object())])
def test_values_that_are_not_text_become_none_with_a_note(field: str, value: Any) -> None:
    out = normalize({field: value})
    assert out[field] is None
    assert out["_notes"] == [f"{field} {value!r} is not text"]


def test_nan_from_a_spreadsheet_is_missing() -> None:
    assert normalize({"zip": float("nan")}) == {"zip": None}


_values = st.one_of(st.none(), st.text(max_size=30), st.integers(), st.floats(), st.booleans(),
                    st.lists(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*KNOWN_FIELDS, "extra"]), _values))
def test_normalize_never_raises_and_is_idempotent(lead: dict[str, Any]) -> None:
    once = normalize(lead)
    assert normalize(once) == once
    assert all(isinstance(once.get(f), str | None) for f in KNOWN_FIELDS)


# --- identity ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lead", "expected"),
    [
        ({"phone": "(512) 555-0142"}, True),
        ({"phone": 5125550142}, True),
        ({"first_name": "Jane", "last_name": "Smith"}, True),
        ({"name": "Jane Smith"}, True),
        ({"name": "Smith, Jane"}, True),
        ({"name": "Dr. Jane Smith Jr."}, True),
        ({"name": "Cher"}, False),
        ({"first_name": "Jane"}, False),
        ({"last_name": "Smith", "city": "Austin"}, False),
        ({"phone": "555-0142"}, False),  # a phone that is not a number is no phone
        ({"email": "jane@example.com", "linkedin_url": "https://www.linkedin.com/in/jane"}, False),
        ({"first_name": "", "last_name": "Smith", "name": "Jane Smith"}, True),
        ({}, False),
    ],
)
def test_identity(lead: dict[str, Any], expected: bool) -> None:
    assert identity(lead) is expected


# --- read_csv ----------------------------------------------------------------------------------------------
def test_read_csv_maps_headers_and_keeps_unknown_columns_exactly() -> None:
    data = ("Full Name,Mobile,E-mail,CRM Id,Notes,Stage \n"
            'Jane Smith,(512) 555-0142,Jane@Example.com,0042,"Met at expo, said ""call me""",Hot\n'
            "José Müller,,,0043,Ünïcødé ✓ 日本語,\n").encode()
    assert read_csv(data) == [
        {"name": "Jane Smith", "phone": "(512) 555-0142", "email": "Jane@Example.com", "CRM Id": "0042",
         "Notes": 'Met at expo, said "call me"', "Stage ": "Hot"},
        {"name": "José Müller", "CRM Id": "0043", "Notes": "Ünïcødé ✓ 日本語", "Stage ": ""},
    ]


def test_read_csv_round_trips_extra_columns_through_csv_writer() -> None:
    cells = ["plain", "with, comma", 'with "quotes"', "multi\nline", "  spaced  ", "", "ñandú €", "a;b\tc"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Name", "Odd Header (v2)", "étiquette"])
    for i, cell in enumerate(cells):
        writer.writerow([f"Person {i}", cell, cell[::-1]])
    leads = read_csv(out.getvalue().encode())
    assert [lead["Odd Header (v2)"] for lead in leads] == cells
    assert [lead["étiquette"] for lead in leads] == [c[::-1] for c in cells]


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("Name", "name"), ("Full Name", "name"), ("Contact", "name"), ("Contact Name", "name"), ("fullName", "name"),
        ("First Name", "first_name"), ("First", "first_name"), ("Firstname", "first_name"),
        ("Given Name", "first_name"), ("firstName", "first_name"), ("first_name", "first_name"),
        ("FIRST-NAME", "first_name"), ("first.name", "first_name"),
        ("Last Name", "last_name"), ("Last", "last_name"), ("Lastname", "last_name"), ("Surname", "last_name"),
        ("Family Name", "last_name"), ("lastName", "last_name"),
        ("Title", "title"), ("Job Title", "title"), ("Position", "title"), ("Role", "title"),
        ("currentPosition.title", "title"),
        ("Company", "company"), ("Company Name", "company"), ("Organization", "company"),
        ("Organisation", "company"), ("Employer", "company"), ("Account Name", "company"),
        ("currentPosition.companyName", "company"),
        ("City", "city"), ("Town", "city"), ("Locality", "city"),
        ("State", "state"), ("Province", "state"), ("Region", "state"), ("State/Province", "state"),
        ("Zip", "zip"), ("Zip Code", "zip"), ("ZIP", "zip"), ("Postal Code", "zip"), ("Postcode", "zip"),
        ("Phone", "phone"), ("Phone Number", "phone"), ("Mobile", "phone"), ("Mobile Phone", "phone"),
        ("Cell", "phone"), ("Telephone", "phone"), ("Direct Dial", "phone"), (" phone_number ", "phone"),
        ("Email", "email"), ("E-mail", "email"), ("Email Address", "email"), ("Work Email", "email"),
        ("LinkedIn URL", "linkedin_url"), ("LinkedIn", "linkedin_url"), ("LinkedIn Profile", "linkedin_url"),
        ("Profile URL", "linkedin_url"), ("navigationUrl", "linkedin_url"), ("linkedin_url", "linkedin_url"),
    ],
)
def test_header_aliases(header: str, field: str) -> None:
    data = f"Email,{header}\nid@example.com,value\n" if field != "email" else f"Name,{header}\nJane,value\n"
    (lead,) = read_csv(data.encode())
    assert lead[field] == "value"
    assert header not in lead or header == field


def test_headline_is_not_a_title() -> None:
    (lead,) = read_csv(b"Name,Headline\nJane,VP Sales | Hiring!\n")
    assert lead == {"name": "Jane", "Headline": "VP Sales | Hiring!"}


def test_values_are_not_normalised_and_empty_known_cells_are_left_out() -> None:
    (lead,) = read_csv(b"First Name,Last Name,Phone,Zip,State,City\n JANE ,smith,512.555.0142,02134,texas,  \n")
    assert lead == {"first_name": " JANE ", "last_name": "smith", "phone": "512.555.0142", "zip": "02134",
                    "state": "texas"}


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_files(delimiter: str) -> None:
    rows = [["Name", "Phone", "Company", "Notes"], ["Jane Smith", "512 555 0142", "Acme, Inc.", "x"],
            ["Bob Jones", "", "Foo; Bar", "y, z"]]
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    assert read_csv(out.getvalue().encode()) == [
        {"name": "Jane Smith", "phone": "512 555 0142", "company": "Acme, Inc.", "Notes": "x"},
        {"name": "Bob Jones", "company": "Foo; Bar", "Notes": "y, z"},
    ]


def test_a_single_column_file_is_read() -> None:
    assert read_csv(b"Name\nJane Smith\nBob Jones\n") == [{"name": "Jane Smith"}, {"name": "Bob Jones"}]


def test_bom_crlf_blank_rows_and_short_rows() -> None:
    data = "\ufeffName,Phone,Notes\r\n\r\nJane,512,n1\r\n,,\r\n  \r\nBob\r\n".encode()
    assert read_csv(data) == [{"name": "Jane", "phone": "512", "Notes": "n1"}, {"name": "Bob", "Notes": ""}]


def test_trailing_empty_cells_and_columns_without_header_are_tolerated_when_empty() -> None:
    assert read_csv(b"Name,Phone,,\nJane,512,,\nBob,,\n") == [{"name": "Jane", "phone": "512"}, {"name": "Bob"}]
    assert read_csv(b"Name,Phone\nJane,512,,\n") == [{"name": "Jane", "phone": "512"}]


def test_a_header_only_file_has_no_leads() -> None:
    assert read_csv(b"Name,Phone\n") == []


def test_max_rows() -> None:
    body = "".join(f"Person {i},512555{i % 10000:04d}\n" for i in range(MAX_LEADS))
    assert len(read_csv(("Name,Phone\n" + body).encode())) == MAX_LEADS
    with pytest.raises(InvalidRequest) as e:
        read_csv(("Name,Phone\n" + body + "One More,5125550100\n").encode())
    assert str(e.value) == "the CSV has 10,001 rows; at most 10,000 leads per job: split the file"
    with pytest.raises(InvalidRequest, match="the CSV has 3 rows; at most 2 leads per job: split the file"):
        read_csv(b"Name\na\nb\n\nc\n", max_rows=2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the CSV is empty"),
        (b" \r\n\t\n\n", "the CSV is empty"),
        (b"\xef\xbb\xbf", "the CSV is empty"),
        (b"Name,City\nJane,Montr\xe9al\n",
         'the CSV is not UTF-8 text: line 2 has byte 0xE9 at byte offset 20 of the file; save it as "CSV UTF-8" '
         "and upload it again"),
        (b"\xef\xbb\xbfName\n\xff\n",
         'the CSV is not UTF-8 text: line 2 has byte 0xFF at byte offset 8 of the file; save it as "CSV UTF-8" '
         "and upload it again"),
        (b",,\n,,\n", "the CSV has no header row: every line is blank"),
        (b"Phone,Mobile\n512,737\n",
         "the headers 'Phone' (column 1) and 'Mobile' (column 2) both mean phone: keep one of them, or rename the "
         "other"),
        (b"Name,Email Address,E-mail\nJane,a@b.co,c@d.co\n",
         "the headers 'Email Address' (column 2) and 'E-mail' (column 3) both mean email: keep one of them, or "
         "rename the other"),
        (b"Name,Notes,Notes\nJane,a,b\n", "the header 'Notes' appears twice (columns 2 and 3): rename one"),
        (b"Name,Phone\nJane,512\nJane Smith,512,555,0142\n",
         "line 3 has 4 cells but there are 2 headers: put quotes around cells that contain ',', or give the extra "
         "column a header"),
        (b"Name;Phone\nJane;512\n\nBob;Acme;x\n",
         "line 4 has 3 cells but there are 2 headers: put quotes around cells that contain ';', or give the extra "
         "column a header"),
        (b"Name,,Phone\nJane,x,512\n", "line 2: column 2 has a value but no header: give the column a header or "
                                       "delete it"),
        (b"Company,Notes,First Name\nAcme,x,Jane\n",
         "none of the headers identifies a person: found 'Company', 'Notes', 'First Name'; understood 'Company' "
         "(company), 'First Name' (first_name). Add a column for name (or first name and last name), phone, email "
         "or LinkedIn URL; the first line of the file must be the column headers"),
        (b"Jane Smith,Acme\nBob Jones,Foo\n",
         "none of the headers identifies a person: found 'Jane Smith', 'Acme'; understood none of them. Add a "
         "column for name (or first name and last name), phone, email or LinkedIn URL; the first line of the file "
         "must be the column headers"),
        (b'Name,Notes\nJane,"never closed\nBob,x\n',
         "the CSV cannot be read from line 2 on (unexpected end of data): check the quotes there; a cell with a "
         "quote in it must be in quotes, with its quotes doubled"),
    ],
)
def test_read_csv_refuses(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        read_csv(data)
    assert str(e.value) == message


def test_identifying_header_sets() -> None:
    for header in ("Name", "First Name,Last Name", "Phone", "Email", "LinkedIn"):
        assert read_csv(f"{header}\n".encode()) == []


# --- from_scrape_rows --------------------------------------------------------------------------------------
def test_from_scrape_rows_on_sandbox_results() -> None:
    body = {"filters": [], "keywords": "growth", "page": 1, "limit": 25, "account_number": 1}
    rows = search_page(body, 1, 25, None)["data"]
    leads = from_scrape_rows(json.loads(json.dumps(rows)))  # as read back from results.jsonl
    assert len(leads) == len(rows) == 25
    for row, lead in zip(rows, leads, strict=True):
        city, state_name, country = row["geoRegion"].split(", ")
        code = next(c[2] for c in CITIES if c[0] == city and c[1] == state_name)
        assert country == "United States"
        assert lead["name"] == row["fullName"]
        assert lead["first_name"] == row["firstName"] and lead["last_name"] == row["lastName"]
        assert lead["title"] == row["currentPosition"]["title"]
        assert lead["company"] == row["currentPosition"]["companyName"]
        assert lead["linkedin_url"] == row["navigationUrl"]
        assert lead["city"] == city
        assert lead["state"] == code
        assert lead["headline"] == row["headline"] and lead["geoRegion"] == row["geoRegion"]
        assert set(lead) == {"name", "first_name", "last_name", "title", "company", "city", "state", "linkedin_url",
                             "headline", "geoRegion"}
        normal = normalize(lead)
        assert "_notes" not in normal and identity(normal)
        assert normal["linkedin_url"] == row["navigationUrl"]


@pytest.mark.parametrize(
    ("region", "city", "state"),
    [
        ("Austin, Texas, United States", "Austin", "TX"),
        ("St. Louis, Missouri, United States", "St. Louis", "MO"),
        ("Washington, District of Columbia, United States", "Washington", "DC"),
        ("Texas, United States", None, "TX"),
        ("Washington, United States", None, "WA"),
        ("Austin, TX", "Austin", "TX"),
        ("Greater Denver Area", "Denver", None),
        ("Greater Salt Lake City Metropolitan Area", "Salt Lake City", None),
        ("Denver Metropolitan Area", "Denver", None),
        ("Toronto, Ontario, Canada", "Toronto", "ON"),
        ("London, England, United Kingdom", None, None),
        ("United States", None, None),
        ("", None, None),
    ],
)
def test_from_scrape_rows_places(region: str, city: str | None, state: str | None) -> None:
    (lead,) = from_scrape_rows([{"fullName": "Jane Smith", "geoRegion": region}])
    assert (lead.get("city"), lead.get("state")) == (city, state)
    assert lead.get("geoRegion") == (region or None)


def test_from_scrape_rows_title_falls_back_and_missing_fields_are_left_out() -> None:
    rows: list[dict[str, Any]] = [
        {"fullName": "Jane Smith", "title": "Owner", "currentPosition": None, "navigationUrl": ""},
        {"firstName": "Bob", "lastName": "Jones", "title": "Old", "currentPosition": {"title": "New"}},
        {"fullName": "Ann Lee", "currentPosition": [{"title": "CTO", "companyName": "Acme"}]},
    ]
    assert from_scrape_rows(rows) == [
        {"name": "Jane Smith", "title": "Owner"},
        {"first_name": "Bob", "last_name": "Jones", "title": "New"},
        {"name": "Ann Lee", "title": "CTO", "company": "Acme"},
    ]


def test_every_sandbox_region_gives_its_city_and_state() -> None:
    for city, state_name, code, *_ in CITIES:
        (lead,) = from_scrape_rows([{"geoRegion": f"{city}, {state_name}, United States"}])
        assert (lead["city"], lead["state"]) == (city, code)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.lists(st.lists(st.text(max_size=8), max_size=4), max_size=5).map(
                     lambda rows: "\n".join(",".join(r) for r in [["Name", "Notes"], *rows]).encode())))
def test_read_csv_refuses_only_with_invalid_request(data: bytes) -> None:
    try:
        leads = read_csv(data)
    except InvalidRequest as e:
        assert str(e)
    else:
        assert all(isinstance(lead, dict) for lead in leads)
