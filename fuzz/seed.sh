#!/usr/bin/env bash
# Builds the seed corpora in fuzz/corpus/<target>/ from ../tests/data (reproducible:
# same inputs, same files). Usage: fuzz/seed.sh [TESTDATA_DIR]
#   parse_message            RFC 4475 + RFC 5118 wire messages, ~200 PROTOS c07-sip requests
#                            (placeholders filled in), and a softphone REGISTER
#   stream_framing           the same messages, alone, in pairs with CRLFCRLF keep-alives
#                            between, with a few chunk-split prefixes
#   parse_uri                every Request-URI and <URI> found in those messages
#   parse_digest_credentials every Authorization / Proxy-Authorization value, plus a few
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
testdata="${1:-${SIPWARD_TESTDATA:-$here/../tests/data}}"
[ -d "$testdata/rfc4475" ] || { echo "no testdata at $testdata" >&2; exit 1; }
corpus="$here/corpus"
rm -rf "$corpus"
mkdir -p "$corpus"/{parse_message,stream_framing,parse_uri,parse_digest_credentials}
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tar xzf "$testdata/protos-c07-sip/protos-c07-sip-cases.tar.gz" -C "$tmp"

python3 - "$testdata" "$tmp/cases" "$corpus" <<'PY'
import hashlib, os, re, sys

testdata, protos, corpus = sys.argv[1:4]

def put(target, data, name=None):
    name = name or hashlib.sha1(data).hexdigest()
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(data)

messages = []  # (name, bytes)
for sub in ("rfc4475", "rfc5118/wire"):
    d = os.path.join(testdata, sub)
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".dat"):
            with open(os.path.join(d, fn), "rb") as f:
                messages.append((sub.replace("/", "-") + "-" + fn, f.read()))

FILL = [
    (b"<To>", b"100@127.0.0.1"), (b"<From>", b"200@127.0.0.1"),
    (b"<From-Address>", b"127.0.0.1"), (b"<From-IP>", b"127.0.0.1"),
    (b"<Local-Port>", b"5060"), (b"<Call-ID>", b"1802"), (b"<CSeq>", b"1"),
    (b"<Branch-ID>", b"42"), (b"<Teardown-Method>", b"CANCEL"),
]

def protos_request(path):
    raw = open(path, "rb").read()
    sp = raw.index(b" ")
    n = int(raw[:sp])
    req = raw[sp + 1: sp + 1 + n]
    for k, v in FILL:
        req = req.replace(k, v)
    end = req.find(b"\r\n\r\n")
    body = len(req) - (end + 4) if end >= 0 else 0
    return req.replace(b"<Content-Length>", str(body).encode())

# Groups 0..2426 mutate the start line and headers (INDEX.md); take every 12th: 203 cases.
for i in range(0, 2427, 12):
    p = os.path.join(protos, "%07d" % i)
    messages.append(("protos-%07d" % i, protos_request(p)))

messages.append(("register-softphone", (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=UDP>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-0011223344AB>\";reg-id=1;expires=3600\r\n"
    b"To: \"Alice\" <sip:alice@example.com>\r\n"
    b"From: \"Alice\" <sip:alice@example.com>;tag=3f1b9e27\r\n"
    b"Call-ID: NzBkY2Q0MzI2ZWY4ZGM2OTk5YjM4MjVhYzQ2Y2Q5NGM\r\n"
    b"CSeq: 2 REGISTER\r\nExpires: 3600\r\nSupported: outbound, path\r\n"
    b"Authorization: Digest username=\"alice\",realm=\"example.com\",nonce=\"abc\",uri=\"sip:example.com\",response=\"6629fae49393a05397450978507c4ef1\",cnonce=\"0a4f113b\",nc=00000001,qop=auth,algorithm=MD5\r\n"
    b"Content-Length: 0\r\n\r\n")))

for name, m in messages:
    put("parse_message", m, name)

# stream_framing: byte 0 = split count, then chunk sizes, then the stream.
for i, (name, m) in enumerate(messages):
    put("stream_framing", b"\x00" + m, name)
    put("stream_framing", b"\x03\x01\x20\x07" + m, name + "-split")
    other = messages[(i + 1) % len(messages)][1]
    put("stream_framing", b"\x02\x05\x40" + b"\r\n\r\n" + m + b"\r\n\r\n" + other + b"\r\n", name + "-pair")

uris = set()
auths = set()
for _, m in messages:
    head = m.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) == 3 and not lines[0].startswith(b"SIP/"):
        uris.add(parts[1])
    uris.update(re.findall(rb"<([^<>\s]{1,300})>", head))
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() in (b"authorization", b"proxy-authorization"):
            auths.add(v.strip())
for u in sorted(uris):
    put("parse_uri", u)
for a in sorted(auths) + [
    b'Digest username="alice", realm="example.test", nonce="abc", uri="sip:example.test", '
    b'response="0123", algorithm=SHA-256, cnonce="xyz", qop=auth, nc=0000000a, opaque="o"',
    b'Digest username="a", username="b"',
    b'Digest userhash=true, username="\\"q\\"", nc=ffffffff',
    b"NoOneKnowsThisScheme opaque-data=here",
]:
    put("parse_digest_credentials", a)
for t in ("parse_message", "stream_framing", "parse_uri", "parse_digest_credentials"):
    print(t, len(os.listdir(os.path.join(corpus, t))))
PY
