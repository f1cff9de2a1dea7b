#!/usr/bin/env python3
"""Generate known-answer TwiML vectors from Twilio's official Python helper library.

Usage:
    python3 scripts/twiml_vectors.py [OUTPUT_PATH]

Requires only the Python standard library and the `twilio` package
(pip install twilio). Writes JSON to OUTPUT_PATH, or to stdout if omitted.
Each case renders `<Connect><Stream>` or `<Start><Stream>` with optional
`<Parameter>` children via twilio.twiml.voice_response.VoiceResponse, and
records `str(response)` (i.e. `to_xml(xml_declaration=True)`) as `expected`.

Note: the library serialises via xml.etree.ElementTree, so the exact escaping
also depends on the Python standard library version used to run this script.
"""

import json
import sys
from importlib.metadata import version

from twilio.twiml.voice_response import VoiceResponse

DECL = '<?xml version="1.0" encoding="UTF-8"?>'

# A deterministic base64url-shaped token (82 chars, alphabet A-Z a-z 0-9 - _).
TOKEN = ("AQID-_abcXYZ0123456789" * 4)[:82]

U = "wss://example.com/media"
SC = "https://example.com/status?x=1&y=2"


def case(id_, verb, url=U, name=None, track=None, status_callback=None,
         status_callback_method=None, parameters=(), say=None, pause_after=None):
    return {
        "id": id_,
        "verb": verb,
        "url": url,
        "name": name,
        "track": track,
        "status_callback": status_callback,
        "status_callback_method": status_callback_method,
        "parameters": [list(p) for p in parameters],
        # {"text": ..., "voice": ..., "language": ..., "loop": ...} or None
        "say": say,
        "pause_after": pause_after,
    }


CASES = [
    # Basics
    case("connect-one-param", "connect", parameters=[("callId", "abc123")]),
    case("connect-no-params", "connect"),
    case("start-no-params", "start"),
    case("start-with-params", "start",
         parameters=[("callId", "abc123"), ("tenant", "acme")]),
    case("connect-token-param", "connect", parameters=[("token", TOKEN)]),
    case("connect-params-unsorted-order", "connect",
         parameters=[("zeta", "1"), ("alpha", "2"), ("mike", "3"),
                     ("Bravo", "4"), ("callId", "5")]),
    case("start-token-and-params-unsorted", "start",
         parameters=[("token", TOKEN), ("callId", "abc123"), ("a", "z")]),
    # Optional attributes
    case("connect-all-attrs-post", "connect", name="my-stream",
         track="inbound_track", status_callback=SC,
         status_callback_method="POST", parameters=[("callId", "abc123")]),
    case("start-all-attrs-get", "start", name="my-stream",
         track="both_tracks", status_callback=SC,
         status_callback_method="GET", parameters=[("callId", "abc123")]),
    case("connect-name-only", "connect", name="stream-1"),
    case("start-track-both-only", "start", track="both_tracks"),
    case("connect-status-callback-only", "connect", status_callback=SC),
    # Escaping in parameter values
    case("value-amp", "connect", parameters=[("v", "a&b")]),
    case("value-lt", "connect", parameters=[("v", "a<b")]),
    case("value-gt", "connect", parameters=[("v", "a>b")]),
    case("value-dquote", "connect", parameters=[("v", 'a"b')]),
    case("value-squote", "connect", parameters=[("v", "a'b")]),
    case("value-mixed-specials", "connect", parameters=[("v", "a&b<c>d\"e'f")]),
    case("value-lf", "connect", parameters=[("v", "line1\nline2")]),
    case("value-cr", "connect", parameters=[("v", "line1\rline2")]),
    case("value-tab", "connect", parameters=[("v", "col1\tcol2")]),
    case("value-crlf", "connect", parameters=[("v", "line1\r\nline2")]),
    case("value-non-ascii", "connect",
         parameters=[("v", "caf\u00e9 \u65e5\u672c\u8a9e \U0001F600")]),
    case("value-already-escaped", "connect", parameters=[("v", "&amp;")]),
    case("value-empty", "connect", parameters=[("v", "")]),
    # Escaping in parameter names
    case("param-name-specials", "start",
         parameters=[("a&b<c>d\"e'f", "x"), ("k\tl\nm\r\nn", "y"),
                     ("\u00e9\u65e5\u672c\u8a9e\U0001F600", "z")]),
    # Escaping in Stream attributes
    case("attr-name-specials", "connect",
         name="n&<>\"'\t\r\n\u00e9\U0001F600"),
    case("attr-status-callback-specials", "start",
         status_callback="https://example.com/s?a=1&b=<2>&c=\"'&amp;\u00e9",
         status_callback_method="POST"),
    # URL shapes (no query string)
    case("url-with-port", "connect", url="wss://example.com:8443/a/b",
         parameters=[("callId", "abc123")]),
    case("url-percent-encoded", "connect", url="wss://example.com/p%20q",
         parameters=[("callId", "abc123")]),
    case("url-ws-localhost-port", "start", url="ws://127.0.0.1:8080/voice/stream",
         parameters=[("callId", "abc123")]),
    # What the webhook's TwiML hook adds around the stream: <Say> before, <Pause> after
    case("say-before-connect", "connect", say={"text": "Connecting you now."},
         parameters=[("token", TOKEN)]),
    case("say-all-attrs", "connect",
         say={"text": "Hello", "voice": "Polly.Amy", "language": "en-GB", "loop": 2},
         parameters=[("token", TOKEN)]),
    case("say-escaped-text", "connect",
         say={"text": "Tom & Jerry <3 \"quotes\" 'single' caf\u00e9"},
         parameters=[("token", TOKEN)]),
    case("say-line-breaks", "connect", say={"text": "line one\nline two\tend"}),
    case("say-empty", "connect", say={"text": ""}),
    case("start-say-and-pause", "start", say={"text": "Listening."},
         pause_after=3600, parameters=[("token", TOKEN)]),
    case("connect-pause-after", "connect", pause_after=1),
    case("say-status-callback-params", "connect", say={"text": "Hi"},
         status_callback=SC, status_callback_method="POST",
         parameters=[("caller", "+14155550199"), ("token", TOKEN)]),
]


def render(c):
    response = VoiceResponse()
    if c["say"] is not None:
        say = c["say"]
        kwargs = {k: say[k] for k in ("voice", "language", "loop") if say.get(k) is not None}
        response.say(say["text"], **kwargs)
    verb = response.connect() if c["verb"] == "connect" else response.start()
    kwargs = {"url": c["url"]}
    for k in ("name", "track", "status_callback", "status_callback_method"):
        if c[k] is not None:
            kwargs[k] = c[k]
    stream = verb.stream(**kwargs)
    for pname, pvalue in c["parameters"]:
        stream.parameter(name=pname, value=pvalue)
    if c["pause_after"] is not None:
        response.pause(length=c["pause_after"])
    xml = str(response)
    if not xml.startswith(DECL):
        raise AssertionError("missing XML declaration: %r" % xml)
    return xml


def main(argv):
    out_cases = []
    for c in CASES:
        try:
            expected = render(c)
        except Exception as e:  # drop cases the library refuses
            print("dropping case %s: %r" % (c["id"], e), file=sys.stderr)
            continue
        out_cases.append(dict(c, expected=expected))

    doc = {
        "source": "twilio-python %s twilio.twiml.voice_response.VoiceResponse, "
                  "generated by scripts/twiml_vectors.py" % version("twilio"),
        "cases": out_cases,
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if len(argv) > 1:
        with open(argv[1], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
