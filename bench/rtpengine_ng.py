#!/usr/bin/env python3
"""Minimal rtpengine ng protocol client: bencoded dictionaries over UDP, '<cookie> <dict>'.

Used by bench.py to set up calls on rtpengine 10.5; also usable by hand inside the relay
namespace, e.g.

    rtpengine_ng.py ping
    rtpengine_ng.py offer  CALLID FROMTAG IP PORT          -> prints rtpengine's port
    rtpengine_ng.py answer CALLID FROMTAG TOTAG IP PORT    -> prints rtpengine's port
    rtpengine_ng.py delete CALLID FROMTAG

Cookies must be unique: rtpengine answers a cookie it has seen recently from its cache (that is
how it handles retransmissions), so a new client never reuses the cookies of an earlier one.
"""

import os
import re
import socket
import sys

DEFAULT_ADDR = ("127.0.0.1", 2223)


def bencode(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(bencode(i) for i in x) + b"e"
    if isinstance(x, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(x.items())) + b"e"
    raise TypeError(type(x))


def bdecode(b, i=0):
    """Returns (value, next offset). Strings stay bytes; dictionary keys become str."""
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i, out = i + 1, []
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i, out = i + 1, {}
        while b[i:i + 1] != b"e":
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k.decode()] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def sdp_for(ip, port):
    """A one-stream PCMU offer/answer for ip:port (IPv4 or IPv6)."""
    fam = "IP6" if ":" in ip else "IP4"
    return (f"v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


class NgClient:
    def __init__(self, addr=DEFAULT_ADDR, timeout=2.0):
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.n = 0
        self.prefix = "mpb%x" % int.from_bytes(os.urandom(6), "big")

    def send(self, d):
        """Sends without waiting; returns the cookie."""
        self.n += 1
        cookie = f"{self.prefix}-{self.n}"
        self.sock.sendto(cookie.encode() + b" " + bencode(d), self.addr)
        return cookie

    def recv(self):
        """Next answer: (cookie, dictionary). Raises socket.timeout."""
        data = self.sock.recv(65535)
        cookie, _, body = data.partition(b" ")
        return cookie.decode(), bdecode(body)[0]

    def query(self, d):
        cookie = self.send(d)
        while True:
            c, r = self.recv()
            if c == cookie:
                return r

    @staticmethod
    def media_of(resp):
        """(address, port) of the first audio stream of the SDP in an answer."""
        if resp.get("result") != b"ok":
            raise RuntimeError(f"ng error: {resp}")
        sdp = resp["sdp"].decode()
        m = re.search(r"^m=audio (\d+) ", sdp, re.M)
        c = re.search(r"^c=IN IP[46] (\S+)", sdp, re.M)
        if not m or not c:
            raise RuntimeError(f"unexpected SDP from rtpengine: {sdp!r}")
        return c.group(1), int(m.group(1))

    def ping(self):
        return self.query({"command": "ping"}).get("result") == b"pong"

    def offer(self, call_id, from_tag, ip, port):
        return self.media_of(self.query({"command": "offer", "call-id": call_id,
                                         "from-tag": from_tag, "sdp": sdp_for(ip, port)}))

    def answer(self, call_id, from_tag, to_tag, ip, port):
        return self.media_of(self.query({"command": "answer", "call-id": call_id,
                                         "from-tag": from_tag, "to-tag": to_tag,
                                         "sdp": sdp_for(ip, port)}))

    def delete(self, call_id, from_tag):
        return self.query({"command": "delete", "call-id": call_id, "from-tag": from_tag})


def main(argv):
    c = NgClient()
    cmd = argv[1] if len(argv) > 1 else "ping"
    if cmd == "ping":
        print("pong" if c.ping() else "no pong")
    elif cmd == "offer" and len(argv) == 6:
        print(*c.offer(argv[2], argv[3], argv[4], int(argv[5])))
    elif cmd == "answer" and len(argv) == 7:
        print(*c.answer(argv[2], argv[3], argv[4], argv[5], int(argv[6])))
    elif cmd == "delete" and len(argv) == 4:
        print(c.delete(argv[2], argv[3]).get("result", b"?").decode())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
