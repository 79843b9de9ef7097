"""Parses an .ics feed from stdin with the `icalendar` package and prints what it found as one
JSON line, so the Rust test can check it. Exits non-zero when the text is not valid RFC 5545
or a VEVENT lacks a property RFC 5545 requires (UID, DTSTAMP, DTSTART)."""

import datetime
import json
import sys

from icalendar import Calendar

raw = sys.stdin.buffer.read()
cal = Calendar.from_ical(raw)
if cal.name != "VCALENDAR":
    sys.exit("not a VCALENDAR")
for required in ("VERSION", "PRODID"):
    if required not in cal:
        sys.exit(f"VCALENDAR lacks {required}")
events = []
for e in cal.walk("VEVENT"):
    for required in ("UID", "DTSTAMP", "DTSTART"):
        if required not in e:
            sys.exit(f"VEVENT lacks {required}")
    start = e.decoded("DTSTART")
    end = e.decoded("DTEND") if "DTEND" in e else None
    all_day = not isinstance(start, datetime.datetime)
    if not all_day and start.tzinfo is None:
        sys.exit("a timed VEVENT has a floating time")
    events.append(
        {
            "uid": str(e["UID"]),
            "summary": str(e.get("SUMMARY", "")),
            "allDay": all_day,
            "start": start.isoformat(),
            "end": end.isoformat() if end is not None else None,
            "alarms": len(e.walk("VALARM")),
        }
    )
print(json.dumps({"events": events}))
