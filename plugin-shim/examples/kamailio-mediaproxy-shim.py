"""kamailio-mediaproxy-shim.py - Kamailio app_python3 (KEMI) routing script that
relays media through mediaproxy by calling libmediaproxy-shim with ctypes, in
place of the stock `mediaproxy` module: use_media_proxy() on INVITE/UPDATE
with SDP and on 18x/2xx replies with SDP, end_media_session() on BYE, CANCEL
and failed INVITEs, and the old module's NAT helpers client_nat_test() and
fix_contact() on initial requests. With MPSHIM_MODE=engage it does what
engage_media_proxy() does with the dialog module instead: every request and
reply of the call is reported to the library's dialog table
(mpshim_dialog_request/_reply; the INVITE creates the dialog, a BYE or a
failure to the INVITE ends it, the failure route reports the end too) and
the library sends every update/remove itself. Load it from kamailio.cfg (see
kamailio.cfg beside this file) with

    loadmodule "app_python3.so"
    modparam("app_python3", "load", "/path/to/kamailio-mediaproxy-shim.py")
    cfgengine "python"

Settings come from the environment of the Kamailio process:
  MPSHIM_LIB         the library (default "libmediaproxy-shim.so.1")
  MPSHIM_SOCKET      dispatcher socket (default /run/mediaproxy/dispatcher.sock)
  MPSHIM_TIMEOUT_MS  reply timeout (default 500)
  MPSHIM_ICE         none | low-priority | high-priority (default none)
  MPSHIM_FORWARD_TO  destination URI for initial INVITEs ($du); default: the
                     Request-URI
  MPSHIM_MODE        use (default: use_media_proxy/end_media_session) or engage
  MPSHIM_MAX_DIALOGS engage: dialogs held at a time (default 10000)
Engage mode keeps the dialogs in a table shared by all Kamailio processes
(mpshim_dialogs_new_shared(), made in mod_init before the workers are
forked), so a call's messages may reach any SIP worker, and its end may come
from another process (a timer, or the RPC process when the dispatcher hangs
the call up with dlg.end_dlg). With Kamailio's dialog module loaded
(kamailio.cfg: -A WITH_DIALOG) the script calls dlg_manage() on the INVITE,
sends the dialog's "h_entry:h_id" as dialog_id (what the dispatcher's
hang-up needs) and reports the dialog module's dialog:end and dialog:failed
events (modparam("dialog", "event_callback", "ksr_dialog_event")) as the
dialog's end; without it the dialog_id is made from the Call-ID (crc32, as
"<high 12 bits>:<low 20 bits>").
The module's AVPs keep their meaning: $avp(s:signaling_ip),
$avp(s:media_relay) and $avp(s:ice_candidate) are read when set.
IPv4/IPv6 bridging (mpshim_message.peer_family, mediaproxy-shim(3) IPV6 AND
BRIDGING) takes each party's media family to be that of its SIP signalling,
which holds when phones send media from the address they signal from: an
SDP in a request goes to the family of the request's next hop (the host of
$du when set, else of the Request-URI), an SDP in a reply to the family the
request came from ($si, kept for the transaction in $avp(s:mpshim_family)).
A host name gives MPSHIM_FAMILY_SAME (no bridging). In engage mode only the
INVITE that creates the dialog names a family; the library bridges the
dialog's later SDPs itself. Proxies that know better (a location lookup, a
media family chosen per destination) set the family themselves.
Each call is logged as "E2E <function>(<what>) rc=<code>".
"""

import ctypes
import os
import socket
import zlib

import KSR  # provided by app_python3

MPSHIM_OK = 1
MPSHIM_NOTHING = 0
MPSHIM_REQUEST = 0
MPSHIM_REPLY = 1
ICE_MODES = {"": 0, "default": 0, "none": 1, "low-priority": 2, "high-priority": 3}
MPSHIM_FAMILY_SAME = 0
MPSHIM_FAMILY_IP4 = 4
MPSHIM_FAMILY_IP6 = 6
NAT_TESTS = 1 | 2 | 4  # private Contact, Via/source mismatch, private Via


class Config(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t),
                ("socket_path", ctypes.c_char_p),
                ("timeout_ms", ctypes.c_int),
                ("retry_interval_ms", ctypes.c_int),
                ("ice_candidate", ctypes.c_int),
                ("dialect", ctypes.c_int)]


class Message(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t),
                ("type", ctypes.c_int),
                ("status", ctypes.c_int),
                ("method", ctypes.c_char_p),
                ("call_id", ctypes.c_char_p),
                ("cseq", ctypes.c_char_p),
                ("from_uri", ctypes.c_char_p),
                ("to_uri", ctypes.c_char_p),
                ("from_tag", ctypes.c_char_p),
                ("to_tag", ctypes.c_char_p),
                ("user_agent", ctypes.c_char_p),
                ("signaling_ip", ctypes.c_char_p),
                ("media_relay", ctypes.c_char_p),
                ("dialog_id", ctypes.c_char_p),
                ("ice_candidate", ctypes.c_int),
                ("content_type", ctypes.c_char_p),
                ("body", ctypes.c_char_p),
                ("body_len", ctypes.c_size_t),
                # since 1.3 (mpshim_message_init, which ctypes finds in its
                # 1.3 version, initialises the whole 1.3 struct): the family
                # of the SDP's receiver, 0 = same as the sender (no bridging)
                ("peer_family", ctypes.c_int)]


class NatInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t),
                ("contact", ctypes.c_char_p),
                ("via", ctypes.c_char_p),
                ("source_ip", ctypes.c_char_p),
                ("source_port", ctypes.c_uint),
                ("sip_asymmetric", ctypes.c_int)]


def load_library(path):
    lib = ctypes.CDLL(path)
    lib.mpshim_version.restype = ctypes.c_char_p
    lib.mpshim_config_init.argtypes = [ctypes.POINTER(Config)]
    lib.mpshim_message_init.argtypes = [ctypes.POINTER(Message)]
    lib.mpshim_nat_info_init.argtypes = [ctypes.POINTER(NatInfo)]
    lib.mpshim_client_new.argtypes = [ctypes.POINTER(Config)]
    lib.mpshim_client_new.restype = ctypes.c_void_p
    lib.mpshim_client_last_error.argtypes = [ctypes.c_void_p]
    lib.mpshim_client_last_error.restype = ctypes.c_char_p
    lib.mpshim_use_media_proxy.argtypes = [ctypes.c_void_p, ctypes.POINTER(Message),
                                           ctypes.POINTER(ctypes.c_void_p),
                                           ctypes.POINTER(ctypes.c_size_t)]
    lib.mpshim_end_media_session.argtypes = [ctypes.c_void_p, ctypes.POINTER(Message)]
    lib.mpshim_client_nat_test.argtypes = [ctypes.POINTER(NatInfo), ctypes.c_int]
    lib.mpshim_fix_contact.argtypes = [ctypes.POINTER(NatInfo), ctypes.POINTER(ctypes.c_void_p),
                                       ctypes.POINTER(ctypes.c_size_t)]
    lib.mpshim_free.argtypes = [ctypes.c_void_p]
    # engage mode (1.2)
    lib.mpshim_dialogs_new.argtypes = [ctypes.c_uint]
    lib.mpshim_dialogs_new.restype = ctypes.c_void_p
    lib.mpshim_dialogs_new_shared.argtypes = [ctypes.c_uint]
    lib.mpshim_dialogs_new_shared.restype = ctypes.c_void_p
    lib.mpshim_dialogs_count.argtypes = [ctypes.c_void_p]
    lib.mpshim_dialogs_count.restype = ctypes.c_uint
    for name in ("mpshim_dialog_request", "mpshim_dialog_reply"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(Message),
                                       ctypes.POINTER(ctypes.c_void_p),
                                       ctypes.POINTER(ctypes.c_size_t)]
    lib.mpshim_dialog_end.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
    return lib


def pv(name):
    """A pseudo-variable as bytes, or None when it is not set."""
    value = KSR.pv.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    return value.encode("utf-8", "surrogateescape")


def family_of(host):
    """MPSHIM_FAMILY_IP4/_IP6 for an address literal (IPv6 with or without
    brackets), MPSHIM_FAMILY_SAME for a host name or nothing."""
    if isinstance(host, bytes):
        host = host.decode("utf-8", "replace")
    host = (host or "").strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    for family, af in ((MPSHIM_FAMILY_IP4, socket.AF_INET), (MPSHIM_FAMILY_IP6, socket.AF_INET6)):
        try:
            socket.inet_pton(af, host)
            return family
        except (OSError, ValueError):
            pass
    return MPSHIM_FAMILY_SAME


def next_hop_family():
    """The family of the current request's next hop: $du's host when $du is
    set, else the Request-URI's."""
    return family_of(pv("$dd") if pv("$du") else pv("$rd"))


class MediaproxyShim:
    """One client handle per Kamailio process, created on first use; in
    engage mode one dialog table for all processes, created here (mod_init,
    before the fork)."""

    def __init__(self, engage=False):
        self.lib = load_library(os.environ.get("MPSHIM_LIB", "libmediaproxy-shim.so.1"))
        self.socket = os.environ.get("MPSHIM_SOCKET", "/run/mediaproxy/dispatcher.sock").encode()
        self.timeout = int(os.environ.get("MPSHIM_TIMEOUT_MS", "500"))
        self.ice = ICE_MODES.get(os.environ.get("MPSHIM_ICE", "none").lower(), 1) or 1
        self.max_dialogs = int(os.environ.get("MPSHIM_MAX_DIALOGS", "10000"))
        self.client = None
        self.table = self.lib.mpshim_dialogs_new_shared(self.max_dialogs) if engage else None
        self.pid = None

    def handle(self):
        if self.client is None or self.pid != os.getpid():
            cfg = Config()
            self.lib.mpshim_config_init(ctypes.byref(cfg))
            cfg.socket_path = self.socket
            cfg.timeout_ms = self.timeout
            cfg.ice_candidate = self.ice
            self.client = self.lib.mpshim_client_new(ctypes.byref(cfg))
            self.pid = os.getpid()
        return self.client

    def dialogs(self):
        """The dialog table of all processes (engage mode)."""
        return self.table

    def error(self):
        return self.lib.mpshim_client_last_error(self.handle()).decode(errors="replace")

    def message(self, peer_family=MPSHIM_FAMILY_SAME):
        """An mpshim_message for the current SIP message, its SDP going to a
        party of peer_family; the bytes it points to are kept alive in the
        returned list."""
        m = Message()
        self.lib.mpshim_message_init(ctypes.byref(m))
        m.peer_family = peer_family
        is_reply = KSR.pv.get("$mt") == 2
        m.type = MPSHIM_REPLY if is_reply else MPSHIM_REQUEST
        m.status = int(KSR.pv.get("$rs") or 0) if is_reply else 0
        keep = []

        def s(value):
            keep.append(value)
            return value

        m.method = s(pv("$rm"))  # for replies: the method of the CSeq
        m.call_id = s(pv("$ci"))
        m.cseq = s(pv("$cs"))
        m.from_uri = s(pv("$fu"))
        m.to_uri = s(pv("$tu"))
        m.from_tag = s(pv("$ft"))
        m.to_tag = s(pv("$tt"))
        m.user_agent = s(pv("$ua") or pv("$hdr(Server)"))
        m.signaling_ip = s(pv("$avp(s:signaling_ip)") or pv("$si"))
        m.media_relay = s(pv("$avp(s:media_relay)"))
        ice = (pv("$avp(s:ice_candidate)") or b"").decode().lower()
        m.ice_candidate = ICE_MODES.get(ice, 0)
        m.content_type = s(pv("$hdr(Content-Type)"))
        body = pv("$rb") or b""
        m.body = s(body)
        m.body_len = len(body)
        return m, keep, body

    def set_body(self, rc, out, out_len, m, body_in, function):
        """Put a body the library returned into the message."""
        if rc == MPSHIM_OK and out.value:
            body = ctypes.string_at(out.value, out_len.value)
            self.lib.mpshim_free(out)
            if body != body_in:
                ctype = (m.content_type or b"application/sdp").decode()
                KSR.textops.set_body(body.decode("utf-8", "surrogateescape"), ctype)
        elif rc != MPSHIM_OK:
            KSR.info("mediaproxy-shim: %s: %d (%s)\n" % (function, rc, self.error()))
        return rc

    def use_media_proxy(self, peer_family=MPSHIM_FAMILY_SAME):
        m, keep, body_in = self.message(peer_family)
        out = ctypes.c_void_p()
        out_len = ctypes.c_size_t()
        rc = self.lib.mpshim_use_media_proxy(self.handle(), ctypes.byref(m), ctypes.byref(out),
                                             ctypes.byref(out_len))
        return self.set_body(rc, out, out_len, m, body_in, "use_media_proxy")

    @staticmethod
    def dialog_id():
        """The dialog module's h_entry:h_id of the current message's dialog,
        else an id made from the Call-ID."""
        if hasattr(KSR, "dialog"):
            entry, hid = pv("$dlg(h_entry)"), pv("$dlg(h_id)")
            if entry and hid:
                return entry + b":" + hid
        crc = zlib.crc32(pv("$ci") or b"")
        return b"%d:%d" % (crc >> 20, crc & 0xFFFFF)

    def dialog_event(self, peer_family=MPSHIM_FAMILY_SAME):
        """Report the current request or reply to the dialog table."""
        m, keep, body_in = self.message(peer_family)
        did = self.dialog_id()
        m.dialog_id = did
        out = ctypes.c_void_p()
        out_len = ctypes.c_size_t()
        function = "mpshim_dialog_reply" if m.type == MPSHIM_REPLY else "mpshim_dialog_request"
        rc = getattr(self.lib, function)(self.dialogs(), self.handle(), ctypes.byref(m),
                                         ctypes.byref(out), ctypes.byref(out_len))
        return self.set_body(rc, out, out_len, m, body_in, function)

    def dialog_end(self):
        rc = self.lib.mpshim_dialog_end(self.dialogs(), self.handle(), self.dialog_id())
        if rc != MPSHIM_OK:
            KSR.info("mediaproxy-shim: dialog_end: %d (%s)\n" % (rc, self.error()))
        return rc

    def end_media_session(self):
        m, keep, _ = self.message()
        rc = self.lib.mpshim_end_media_session(self.handle(), ctypes.byref(m))
        if rc != MPSHIM_OK:
            KSR.info("mediaproxy-shim: end_media_session: %d (%s)\n" % (rc, self.error()))
        return rc

    def nat_info(self, keep):
        n = NatInfo()
        self.lib.mpshim_nat_info_init(ctypes.byref(n))
        for field, name in (("contact", "$hdr(Contact)"), ("via", "$hdr(Via)"),
                            ("source_ip", "$si")):
            value = pv(name)
            keep.append(value)
            setattr(n, field, value)
        n.source_port = int(KSR.pv.get("$sp") or 0)
        return n

    def client_nat_test(self, tests):
        keep = []
        n = self.nat_info(keep)
        return self.lib.mpshim_client_nat_test(ctypes.byref(n), tests)

    def fix_contact(self):
        """Replace the Contact header when the fixed value differs."""
        keep = []
        n = self.nat_info(keep)
        out = ctypes.c_void_p()
        out_len = ctypes.c_size_t()
        rc = self.lib.mpshim_fix_contact(ctypes.byref(n), ctypes.byref(out), ctypes.byref(out_len))
        if rc == MPSHIM_OK:
            value = ctypes.string_at(out.value, out_len.value)
            self.lib.mpshim_free(out)
            if value != keep[0]:
                KSR.hdr.remove("Contact")
                KSR.hdr.append("Contact: %s\r\n" % value.decode("utf-8", "surrogateescape"))
        return rc


def log_rc(function, what, rc):
    KSR.notice("E2E %s(%s) rc=%d\n" % (function, what, rc))


class kamailio:  # noqa: N801 - the name app_python3's examples use
    def __init__(self):
        self.engage = os.environ.get("MPSHIM_MODE", "use").lower() == "engage"
        self.mp = MediaproxyShim(self.engage)
        self.forward_to = os.environ.get("MPSHIM_FORWARD_TO", "")
        KSR.info("mediaproxy-shim %s loaded\n" % self.mp.lib.mpshim_version().decode())

    def child_init(self, rank):
        return 0

    def use(self, what):
        """use_media_proxy() with the SDP receiver's family: a request's next
        hop, or for a reply the family its request came from."""
        if KSR.pv.get("$mt") == 2:
            family = int(KSR.pv.get("$avp(s:mpshim_family)") or 0)
        else:
            family = next_hop_family()
        log_rc("use_media_proxy", what, self.mp.use_media_proxy(family))

    def end(self, what):
        log_rc("end_media_session", what, self.mp.end_media_session())

    def dialog(self, what, peer_family=MPSHIM_FAMILY_SAME):
        """Engage mode: report the message; log like the other calls."""
        rc = self.mp.dialog_event(peer_family)
        log_rc("dialog_reply" if KSR.pv.get("$mt") == 2 else "dialog_request", what, rc)

    @staticmethod
    def on_reply():
        """Run ksr_onreply_mediaproxy for the replies of the request, which go
        back to the family the request came from."""
        KSR.pv.seti("$avp(s:mpshim_family)", family_of(pv("$si")))
        KSR.tm.t_on_reply("ksr_onreply_mediaproxy")

    def relay(self):
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()
        return 1

    def ksr_request_route(self, msg):
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        method = KSR.pv.get("$rm")
        if KSR.siputils.has_totag() > 0:
            if KSR.rr.loose_route() > 0:
                if self.engage:
                    # ACK with a late answer, re-INVITE, UPDATE, BYE (ends it)
                    self.dialog(method)
                    if method != "ACK":
                        self.on_reply()
                elif method == "BYE":
                    self.end("BYE")
                elif method in ("INVITE", "UPDATE") and KSR.textops.has_body() > 0:
                    self.use(method)
                    self.on_reply()
                return self.relay()
            if method == "ACK" and KSR.tm.t_check_trans() > 0:
                return self.relay()
            if method != "ACK":
                KSR.sl.sl_send_reply(404, "Not here")
            return 1
        if method == "CANCEL":
            if KSR.tm.t_check_trans() > 0:
                if not self.engage:  # engage: the 487 to the INVITE ends it
                    self.end("CANCEL")
                self.relay()
            return 1
        KSR.tm.t_check_trans()
        if method != "INVITE":
            KSR.sl.sl_send_reply(405, "Method Not Allowed")
            return 1
        found = self.mp.client_nat_test(NAT_TESTS)
        KSR.info("mediaproxy-shim: client_nat_test(%d) = %d\n" % (NAT_TESTS, found))
        if found > 0:
            self.mp.fix_contact()
        KSR.hdr.remove("Route")
        KSR.rr.record_route()
        if self.forward_to:
            KSR.pv.sets("$du", self.forward_to)
        if self.engage:
            if hasattr(KSR, "dialog"):
                KSR.dialog.dlg_manage()  # its h_entry:h_id is the dialog_id
            # creates the dialog, with or without SDP; bridged for its life
            # when the callee's family is not the caller's
            self.dialog(method, next_hop_family())
        elif KSR.textops.has_body() > 0:
            self.use(method)
        self.on_reply()
        KSR.tm.t_on_failure("ksr_failure_mediaproxy")
        return self.relay()

    def ksr_onreply_mediaproxy(self, msg):
        status = int(KSR.pv.get("$rs") or 0)
        if self.engage:
            if status > 100:  # the library picks what the module relays
                self.dialog("reply %d" % status)
        elif (180 <= status <= 189 or 200 <= status <= 299) and KSR.textops.has_body() > 0:
            self.use("reply %d" % status)
        return 1

    def ksr_failure_mediaproxy(self, msg):
        if self.engage:
            # normally already ended by the failure reply (rc 0); a local
            # timeout (408) ends it here
            log_rc("dialog_end", "failure", self.mp.dialog_end())
        else:
            self.end("failure")
        return 1

    def ksr_dialog_event(self, msg, evname):
        """The dialog module's events (engage mode with the dialog module):
        the end of a dialog however it came (BYE, failure, timeout, the
        dispatcher's hang-up through dlg.end_dlg), in whatever process."""
        if self.engage and evname in ("dialog:end", "dialog:failed"):
            log_rc("dialog_end", evname, self.mp.dialog_end())
        return 1

    def ksr_reply_route(self, msg):
        return 1

    def ksr_onsend_route(self, msg):
        return 1


def mod_init():
    return kamailio()
