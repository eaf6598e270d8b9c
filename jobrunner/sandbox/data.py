"""The sandbox's fake world: people, phones and carriers, each a pure function of the request.

Nothing here is stored. A lead is drawn from a hash of (search, position), a skip-trace person from a
hash of the name asked for, a carrier or DNC answer from a hash of the number, so the same request
always gets the same answer, in this process or the next one (a crashed and restarted job sees what it
saw before). The seed of ``SandboxConfig`` drives faults only, never data.

The proportions mimic what lead teams meet: about 1 lead in 25 on a page repeats one from the page
before (so de-duplication has work to do), 10% of names have no skip-trace match and 10% have several,
~15% of numbers are VoIP and ~10% landlines, ~20% are on a Do Not Call list. Phone numbers are all in
the 555-0100..555-0199 block, which is reserved for fiction: a mistake can never dial a real person.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

Doc = dict[str, Any]

# city, state, state code, first three zip digits, area codes
CITIES: tuple[tuple[str, str, str, str, tuple[int, ...]], ...] = (
    ("Austin", "Texas", "TX", "787", (512, 737)),
    ("Dallas", "Texas", "TX", "752", (214, 469, 972)),
    ("Houston", "Texas", "TX", "770", (713, 281, 832)),
    ("San Antonio", "Texas", "TX", "782", (210, 726)),
    ("Phoenix", "Arizona", "AZ", "850", (602, 480)),
    ("Denver", "Colorado", "CO", "802", (303, 720)),
    ("Seattle", "Washington", "WA", "981", (206,)),
    ("Portland", "Oregon", "OR", "972", (503, 971)),
    ("San Francisco", "California", "CA", "941", (415, 628)),
    ("Los Angeles", "California", "CA", "900", (213, 310, 323)),
    ("San Diego", "California", "CA", "921", (619, 858)),
    ("San Jose", "California", "CA", "951", (408, 669)),
    ("Sacramento", "California", "CA", "958", (916,)),
    ("Las Vegas", "Nevada", "NV", "891", (702, 725)),
    ("Salt Lake City", "Utah", "UT", "841", (801, 385)),
    ("Chicago", "Illinois", "IL", "606", (312, 773, 872)),
    ("Minneapolis", "Minnesota", "MN", "554", (612,)),
    ("Milwaukee", "Wisconsin", "WI", "532", (414,)),
    ("Madison", "Wisconsin", "WI", "537", (608,)),
    ("Detroit", "Michigan", "MI", "482", (313,)),
    ("Columbus", "Ohio", "OH", "432", (614, 380)),
    ("Cleveland", "Ohio", "OH", "441", (216,)),
    ("Indianapolis", "Indiana", "IN", "462", (317,)),
    ("St. Louis", "Missouri", "MO", "631", (314,)),
    ("Kansas City", "Missouri", "MO", "641", (816,)),
    ("Nashville", "Tennessee", "TN", "372", (615, 629)),
    ("Atlanta", "Georgia", "GA", "303", (404, 470, 678)),
    ("Charlotte", "North Carolina", "NC", "282", (704, 980)),
    ("Raleigh", "North Carolina", "NC", "276", (919, 984)),
    ("Miami", "Florida", "FL", "331", (305, 786)),
    ("Tampa", "Florida", "FL", "336", (813,)),
    ("Orlando", "Florida", "FL", "328", (407, 689)),
    ("Jacksonville", "Florida", "FL", "322", (904,)),
    ("New York", "New York", "NY", "100", (212, 646, 917)),
    ("Brooklyn", "New York", "NY", "112", (718, 347)),
    ("Buffalo", "New York", "NY", "142", (716,)),
    ("Boston", "Massachusetts", "MA", "021", (617, 857)),
    ("Providence", "Rhode Island", "RI", "029", (401,)),
    ("Hartford", "Connecticut", "CT", "061", (860,)),
    ("Philadelphia", "Pennsylvania", "PA", "191", (215, 267)),
    ("Pittsburgh", "Pennsylvania", "PA", "152", (412,)),
    ("Baltimore", "Maryland", "MD", "212", (410, 443)),
    ("Washington", "District of Columbia", "DC", "200", (202,)),
    ("Richmond", "Virginia", "VA", "232", (804,)),
    ("New Orleans", "Louisiana", "LA", "701", (504,)),
    ("Oklahoma City", "Oklahoma", "OK", "731", (405,)),
    ("Albuquerque", "New Mexico", "NM", "871", (505,)),
    ("Boise", "Idaho", "ID", "837", (208,)),
    ("Omaha", "Nebraska", "NE", "681", (402,)),
    ("Louisville", "Kentucky", "KY", "402", (502,)),
    ("Birmingham", "Alabama", "AL", "352", (205,)),
    ("Charleston", "South Carolina", "SC", "294", (843,)),
    ("Des Moines", "Iowa", "IA", "503", (515,)),
    ("Anchorage", "Alaska", "AK", "995", (907,)),
    ("Honolulu", "Hawaii", "HI", "968", (808,)),
)

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Christopher", "Karen",
    "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Betty", "Mark", "Sandra", "Steven", "Ashley",
    "Andrew", "Emily", "Joshua", "Michelle", "Kevin", "Amanda", "Brian", "Melissa", "Ryan", "Stephanie",
    "Jacob", "Rebecca", "Nicholas", "Laura", "Eric", "Rachel", "Jonathan", "Megan", "Justin", "Lauren",
    "Brandon", "Priya", "Wei", "Carlos", "Maria", "Juan", "Ana", "Luis", "Sofia", "Ahmed",
    "Fatima", "Hiroshi", "Yuki", "Olga", "Dmitri", "Aisha", "Kwame", "Mei", "Raj", "Deepa",
    "José", "Sean", "Siobhan", "Liam", "Chloe", "Ethan", "Olivia", "Noah", "Emma", "Zoë",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
    "Patel", "Shah", "Chen", "Wang", "Kim", "Park", "Singh", "Kowalski", "Novak", "O'Brien",
    "McCarthy", "Murphy", "Sullivan", "Becker", "Schmidt", "Fischer", "Rossi", "Russo", "Cohen", "Levy",
    "Okafor", "Mensah", "Tanaka", "Sato", "Ivanov", "Petrov", "Haddad", "Khan", "Yilmaz", "Van der Berg",
)
TITLES = (
    "VP of Sales", "Director of Sales", "Head of Growth", "Account Executive", "Senior Account Executive",
    "Sales Manager", "Regional Sales Director", "Chief Revenue Officer", "Business Development Manager",
    "Marketing Director", "VP Marketing", "Chief Marketing Officer", "Founder & CEO", "Co-Founder", "Owner",
    "Operations Manager", "Director of Operations", "Chief Operating Officer", "Procurement Manager",
    "Head of Partnerships", "Customer Success Manager", "Director of Customer Success", "Product Manager",
    "Engineering Manager", "CTO", "IT Director", "HR Director", "Talent Acquisition Lead", "Controller",
    "CFO", "General Manager", "Branch Manager", "Practice Manager", "Office Manager", "Real Estate Broker",
    "Insurance Agent", "Financial Advisor", "Mortgage Loan Officer",
)
_COMPANY_FIRST = (
    "Northwind", "Bluebonnet", "Summit", "Harbor", "Ironwood", "Lakeshore", "Redwood", "Granite", "Silverline",
    "Cascade", "Pioneer", "Keystone", "Evergreen", "Brightpath", "Crescent", "Meridian", "Riverbend",
    "Copperleaf", "Highland", "Sterling", "Prairie", "Atlas", "Beacon", "Canyon", "Orchard",
)
_COMPANY_SECOND = (
    "Logistics", "Health", "Analytics", "Roofing", "Insurance Group", "Realty", "Software", "Dental Partners",
    "Capital", "Manufacturing", "Solar", "Legal", "Foods", "Construction", "Labs", "Marketing", "Financial",
    "Home Services", "Medical Group", "Systems",
)
_COMPANY_FORM = ("", "", "", ", Inc.", " LLC", " Co.")
_TAGLINES = (
    "", "", "", " | Helping teams grow revenue", " | Hiring!", " | Speaker & Mentor", " | Ex-Startup Founder",
    " | Building great customer experiences",
)

VOIP_CARRIERS = (
    ("Google (Grand Central) - SVR", "Google Voice"),
    ("TextNow", "TextNow"),
    ("Bandwidth.com - SVR", "Bandwidth"),
    ("Twilio", "Twilio"),
    ("Burner", "Burner"),
    ("Hushed", "Hushed"),
    ("Line2", "Line2"),
)
LANDLINE_CARRIERS = (
    ("AT&T Southwest", "AT&T"), ("Frontier Communications", "Frontier"), ("CenturyLink", "Lumen"),
    ("Windstream", "Windstream"), ("Verizon New York", "Verizon"),
)
MOBILE_CARRIERS = (
    ("Verizon Wireless", "Verizon", "311", "480"),
    ("T-Mobile USA", "T-Mobile", "310", "260"),
    ("AT&T Mobility", "AT&T", "310", "410"),
)
DNC_REASONS = ("Federal DNC", "State DNC", "Internal DNC", "Known litigator")
PHONE_TYPES = ("Wireless", "Landline", "VOIP")


def digest(*parts: object) -> bytes:
    """A stable hash of the parts (the one source of every "random" choice about the data)."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(digest(*parts)[:8], "big"))


def _bucket(*parts: object) -> int:
    """0..99, uniformly, from the parts."""
    return int.from_bytes(digest(*parts)[:4], "big") % 100


# --- LinkedIn ----------------------------------------------------------------------------------------------
def search_identity(body: Mapping[str, Any]) -> str:
    """What makes two search requests the same search: the body without its paging fields, as canonical
    JSON, hashed (64 hex chars; ``/_stats`` shows the first 12)."""
    rest = {k: v for k, v in body.items() if k not in ("page", "limit", "account_number")}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def derived_total(identity: str) -> int:
    """How many results a search has when the config does not say: 150..3000, fixed per search."""
    return 150 + int(identity[:8], 16) % 2851


def _filter_texts(body: Mapping[str, Any], kind: str) -> list[str]:
    texts: list[str] = []
    filters = body.get("filters")
    for item in filters if isinstance(filters, list) else []:
        if isinstance(item, dict) and item.get("type") == kind and isinstance(item.get("values"), list):
            texts += [str(v["text"]) for v in item["values"] if isinstance(v, dict) and v.get("text")]
    return texts


def _cities_for(body: Mapping[str, Any]) -> tuple[tuple[str, str, str, str, tuple[int, ...]], ...]:
    """A REGION filter naming a state or a city we know narrows the leads to it; anything else (a geo id,
    a region we do not know) gives leads from all over the country."""
    wanted = {t.split(",")[0].strip().lower() for t in _filter_texts(body, "REGION")}
    chosen = tuple(c for c in CITIES if c[0].lower() in wanted or c[1].lower() in wanted or c[2].lower() in wanted)
    return chosen or CITIES


def _base_lead(identity: str, index: int, body: Mapping[str, Any]) -> Doc:
    rng = _rng("lead", identity, index)
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    city, state, *_ = rng.choice(_cities_for(body))
    companies = _filter_texts(body, "CURRENT_COMPANY")
    company = (rng.choice(companies) if companies else
               rng.choice(_COMPANY_FIRST) + " " + rng.choice(_COMPANY_SECOND) + rng.choice(_COMPANY_FORM))
    title = rng.choice(TITLES)
    lead_id = "ACwAA" + base64.urlsafe_b64encode(digest("lead-id", identity, index)).decode()[:34]
    return {
        "fullName": f"{first} {last}",
        "firstName": first,
        "lastName": last,
        "geoRegion": f"{city}, {state}, United States",
        "navigationUrl": f"https://www.linkedin.com/sales/lead/{lead_id},NAME_SEARCH,xyz",
        "currentPosition": {"title": title, "companyName": company},
        "title": title,
        "headline": f"{title} at {company}{rng.choice(_TAGLINES)}",
    }


def lead_at(identity: str, index: int, limit: int, body: Mapping[str, Any]) -> Doc:
    """The lead shown at 0-based ``index`` of a search paged by ``limit``.

    About 1 in 25 positions after the first page shows again a lead of the page before, as the real
    search does when its results shift between two page fetches.
    """
    while index >= limit and _bucket("repeat", identity, index) < 4:
        page_start = (index // limit - 1) * limit
        index = page_start + int.from_bytes(digest("repeat-of", identity, index)[:4], "big") % limit
    return _base_lead(identity, index, body)


def search_page(body: Mapping[str, Any], page: int, limit: int, total: int | None) -> Doc:
    """The ``response`` document of one page of a search."""
    identity = search_identity(body)
    count = derived_total(identity) if total is None else total
    start = (page - 1) * limit
    leads = [lead_at(identity, i, limit, body) for i in range(start, min(start + limit, count))]
    return {"data": leads, "total": count, "page": page, "limit": limit, "hasMore": start + limit < count}


# --- Skip tracing ------------------------------------------------------------------------------------------
def normalize_name(name: str) -> str:
    return " ".join(name.split())


def parse_citystatezip(text: str) -> tuple[str, str, str]:
    """``"Austin, TX 78701"`` -> (Austin, TX, 78701); lenient, like the real service."""
    city, comma, rest = text.rpartition(",")
    if not comma:
        return normalize_name(text), "", ""
    state, _, zip_code = rest.strip().partition(" ")
    return normalize_name(city), state.strip().upper(), zip_code.strip()


def candidates(name: str, citystatezip: str | None) -> list[Doc]:
    """The ``PeopleDetails`` for a name (and place).

    By a hash of the name alone: 10% of names have no candidate, 10% have 2-4 (the same name in
    different cities; with an address asked for, one of them lives there, not necessarily the first),
    the rest have exactly one, living where asked.
    """
    name = normalize_name(name)
    bucket = _bucket("skiptrace", name.lower())
    if bucket < 10:
        return []
    rng = _rng("skiptrace-cities", name.lower())
    if citystatezip:
        city, state, zip_code = parse_citystatezip(citystatezip)
    else:
        city, _, state, _, _ = rng.choice(CITIES)
        zip_code = ""
    places = [(city, state, zip_code)]
    if bucket < 20:
        others = [c for c in CITIES if c[0].lower() != city.lower()]
        places += [(c[0], c[2], "") for c in rng.sample(others, rng.randint(1, 3))]
        rng.shuffle(places)
    return [_Person(name, *place).summary() for place in places]


class _Person:
    """One skip-trace person; everything about them follows from (name, city, state, zip)."""

    def __init__(self, name: str, city: str, state: str, zip_code: str) -> None:
        self.name, self.city, self.state = name, city, state
        rng = _rng("person", name.lower(), city.lower(), state)
        known = next((c for c in CITIES if c[0].lower() == city.lower() and c[2] == state), None)
        area_codes = known[4] if known else rng.choice(CITIES)[4]
        self.zip = zip_code or ((known[3] if known else "100") + f"{rng.randrange(100):02d}")
        self.age = rng.randint(24, 78)
        self.phones: list[Doc] = []
        for n in range(rng.choice((1, 2, 2, 3, 3, 4))):
            kind = "Wireless" if n == 0 and rng.random() < 0.75 else rng.choice(PHONE_TYPES)
            number = f"({rng.choice(area_codes)}) 555-01{rng.randrange(100):02d}"
            date = f"{rng.randint(2017, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            self.phones.append({"number": number, "phone_type": kind, "last_reported": date})
        words = name.split() or ["person"]
        handle = "".join(ch for ch in f"{words[0][:1]}{words[-1]}".lower() if ch.isascii() and ch.isalnum())
        handle = handle or "person"
        self.emails = [f"{handle}{rng.randrange(10, 99)}@example.com", f"{handle}@example.net"][: rng.randint(1, 2)]
        self.id = _person_id(name, city, state, self.zip)

    def summary(self) -> Doc:
        lives_in = f"{self.city}, {self.state}" if self.state else self.city
        return {"Person ID": self.id, "Name": self.name, "Lives in": lives_in, "Age": str(self.age),
                "Telephone": self.phones[0]["number"]}

    def details(self) -> Doc:
        return {
            "Person Details": [{"Name": self.name, "Age": str(self.age), "Telephone": self.phones[0]["number"],
                                "Lives in": self.summary()["Lives in"]}],
            "All Phone Details": self.phones,
            "Email Addresses": self.emails,
            "Current Address Details List": [{"postal_code": self.zip, "address_region": self.state,
                                              "address_locality": self.city}],
        }


# A person id carries the person (so a details call needs no memory of the search that found them, even
# across a sandbox restart) and a check, so an id nobody was given is a 404.
def _person_id(name: str, city: str, state: str, zip_code: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps([name, city, state, zip_code]).encode()).decode().rstrip("=")
    return f"px{digest('person-id', payload).hex()[:8]}{payload}"


def person_details(peo_id: str) -> Doc | None:
    """The ``detailsbyID`` answer for an id ``candidates`` gave, else None."""
    check, payload = peo_id[2:10], peo_id[10:]
    if not peo_id.startswith("px") or not payload or digest("person-id", payload).hex()[:8] != check:
        return None
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        name, city, state, zip_code = (str(f) for f in fields)
    except (ValueError, TypeError):
        return None
    return _Person(name, city, state, zip_code).details()


# --- Carrier and DNC ---------------------------------------------------------------------------------------
def carrier_lookup(e164: str) -> Doc:
    """The Telnyx ``data`` for a number: ~15% VoIP, ~10% landline, the rest mobile."""
    bucket = _bucket("carrier", e164)
    rng = _rng("carrier-pick", e164)
    if bucket < 15:
        name, normalized = rng.choice(VOIP_CARRIERS)
        line_type, mcc, mnc = "voip", None, None
    elif bucket < 25:
        name, normalized = rng.choice(LANDLINE_CARRIERS)
        line_type, mcc, mnc = rng.choice(("fixed line", "landline")), None, None
    else:
        name, normalized, mcc, mnc = rng.choice(MOBILE_CARRIERS)
        line_type = "mobile"
    us = e164.startswith("+1") and len(e164) == 12
    ported = rng.random() < 0.3
    return {
        "record_type": "number_lookup",
        "phone_number": e164,
        "country_code": "US" if us else "ZZ",
        "national_format": f"({e164[2:5]}) {e164[5:8]}-{e164[8:]}" if us else e164,
        "fraud": None,
        "caller_name": None,
        "portability": {
            "line_type": line_type,
            "ported_status": "Y" if ported else "N",
            "ported_date": f"{rng.randint(2012, 2024)}-{rng.randint(1, 12):02d}-01" if ported else "",
            "spid": f"{rng.randrange(10000):04d}",
            "spid_carrier_name": name,
            "spid_carrier_type": line_type,
            "ocn": f"{rng.randrange(10000):04d}",
            "lrn": e164[2:] if us else "",
        },
        "carrier": {"name": name, "type": line_type, "normalized_carrier": normalized,
                    "mobile_country_code": mcc, "mobile_network_code": mnc, "error_code": None},
    }


def dnc_scrub(digits: str) -> Doc:
    """The scrub ``data`` for a 10-digit number: ~20% are on a list."""
    listed = _bucket("dnc", digits) < 20
    reason = DNC_REASONS[_bucket("dnc-reason", digits) % len(DNC_REASONS)] if listed else "Clean"
    return {"phoneNumber": digits, "isDoNotCall": listed,
            "contactStatus": {"canContact": not listed, "reason": reason}}
