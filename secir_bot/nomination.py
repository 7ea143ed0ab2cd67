"""Reading the administrative contact's nomination mail: a simple, forgiving format.

The invitation mail asks for an answer like this (the admin manual shows it too)::

    code: ABCDE-FGHJK-MNPQR-STVWX

    name: Alice Jansen
    email: alice@registry.nl
    phone: +31 70 123 4567
    fingerprint: 0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567
    matrix: @alice:matrix.registry.nl
    timezone: Europe/Amsterdam
    languages: nl, en

    name: Bob ...

One block of ``field: value`` lines per nominee, in rank order (the first is the primary
contact), at most three. A block starts at ``name:`` (or a ``nominee`` line). Field names
ignore case and have common spellings (``e-mail``, ``mobile``, ``fpr``, ``mxid``, ``tz``,
``language``...). A public key may be pasted as an armoured block inside the nominee's block
instead of, or as well as, the fingerprint. Other text (a greeting, a signature after
``-- ``, the quoted invitation) is ignored. Every problem is reported at once, with the
nominee's number and the field, so the contact can fix the whole mail in one go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from secir_bot import validate
from secir_bot.cases import CODE_PATTERN, MAX_NOMINEES

_FIELDS = {
    "name": "name",
    "full name": "name",
    "email": "email",
    "e-mail": "email",
    "mail": "email",
    "phone": "phone",
    "telephone": "phone",
    "tel": "phone",
    "mobile": "phone",
    "fingerprint": "fingerprint",
    "fpr": "fingerprint",
    "key": "fingerprint",
    "pgp": "fingerprint",
    "openpgp": "fingerprint",
    "matrix": "matrix",
    "matrix id": "matrix",
    "mxid": "matrix",
    "timezone": "timezone",
    "time zone": "timezone",
    "tz": "timezone",
    "zone": "timezone",
    "languages": "languages",
    "language": "languages",
    "langs": "languages",
}
_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z -]{0,20}?)\s*:\s*(.*?)\s*$")
_NOMINEE = re.compile(r"^\s*nominee\b.*$", re.IGNORECASE)
_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_END = "-----END PGP PUBLIC KEY BLOCK-----"


@dataclass
class NomineeForm:
    """One nominee as written, validated field by field."""

    position: int
    name: str = ""
    email: str = ""
    phone: str | None = None
    fingerprint: str | None = None
    key: str | None = None
    matrix_id: str | None = None
    timezone: str | None = None
    languages: tuple[str, ...] = ()
    seen: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Nomination:
    code: str | None
    nominees: tuple[NomineeForm, ...]
    problems: tuple[str, ...]


def _set(form: NomineeForm, key: str, value: str, problems: list[str]) -> None:
    where = f"nominee {form.position}, {key}"
    if key in form.seen:
        problems.append(f"{where}: given twice")
        return
    form.seen.add(key)
    try:
        if key == "name":
            form.name = validate.one_line(value, "the name", max_length=200)
        elif key == "email":
            form.email = validate.email(value)
        elif key == "phone":
            form.phone = validate.phone(value)
        elif key == "fingerprint":
            form.fingerprint = validate.fingerprint(value)
        elif key == "matrix":
            form.matrix_id = validate.matrix_user_id(value)
        elif key == "timezone":
            form.timezone = validate.timezone(value)
        elif key == "languages":
            form.languages = validate.languages(value)
    except validate.Invalid as exc:
        problems.append(f"{where}: {exc}")


def parse(body: str) -> Nomination:
    """Read a nomination mail's text; see the module docstring for the format."""
    problems: list[str] = []
    forms: list[NomineeForm] = []
    codes: list[str] = []
    lines = body.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if line in ("--", "-- ") or lines[i - 1] == "-- " or line.startswith(">"):
            break
        if line.strip() == _BEGIN:
            block = [_BEGIN]
            while i < len(lines) and lines[i - 1].strip() != _END:
                block.append(lines[i].strip())
                i += 1
            if not forms:
                problems.append("a public key comes before any nominee; put it in their block")
            elif forms[-1].key is not None:
                problems.append(f"nominee {forms[-1].position}: two keys given")
            else:
                forms[-1].key = "\n".join(block) + "\n"
            continue
        if _NOMINEE.match(line) and ":" not in line:
            forms.append(NomineeForm(position=len(forms) + 1))
            continue
        match = _LINE.match(line)
        if match is None:
            continue  # free text: a greeting, a remark
        key, value = match.group(1).strip().lower(), match.group(2)
        if key == "code":
            codes.extend(CODE_PATTERN.findall(value.upper()) or [value.strip()])
            continue
        field_name = _FIELDS.get(key)
        if field_name is None:
            if forms:
                problems.append(f"nominee {forms[-1].position}: unknown field {key!r}")
            continue
        if not forms or (field_name == "name" and "name" in forms[-1].seen):
            forms.append(NomineeForm(position=len(forms) + 1))
        _set(forms[-1], field_name, value, problems)
    forms = [f for f in forms if f.seen or f.key]
    for form in forms:
        where = f"nominee {form.position}"
        if not form.name:
            problems.append(f"{where}: the name is missing")
        if not form.email and "email" not in form.seen:
            problems.append(f"{where}: the email address is missing")
        if form.fingerprint is None and form.key is None and "fingerprint" not in form.seen:
            problems.append(f"{where}: give the key's fingerprint or paste the public key")
        if form.position == 1 and form.phone is None and "phone" not in form.seen:
            problems.append(f"{where}: the primary contact needs a phone number")
    if not forms:
        problems.append("no nominee found: give at least a name, email and fingerprint")
    if len(forms) > MAX_NOMINEES:
        problems.append(f"{len(forms)} nominees given; at most {MAX_NOMINEES} per ccTLD")
    emails = [f.email for f in forms if f.email]
    if len(set(emails)) != len(emails):
        problems.append("the same email address is given for two nominees")
    if len(set(codes)) > 1:
        problems.append("more than one code given")
    code = codes[0] if codes else None
    if code is None:
        problems.append("the code from the invitation is missing (a line 'code: ...')")
    return Nomination(code=code, nominees=tuple(forms), problems=tuple(problems))
