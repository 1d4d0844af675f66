// JSON codec of the state a relay keeps across restarts (session_state.h).
//
// Keys are short (a relay with 10,000 calls writes these often) and stable:
// a new field gets a new key and readers treat a missing key as its default,
// so a state file written by this version is read by the next. The reader is
// strict about types and ranges: anything else refuses the record.
#include "relay/session_state.h"

#include <rapidjson/document.h>

#include <charconv>
#include <cmath>

#include "common/json_writer.h"

namespace mp::relay {

namespace {

constexpr size_t kMaxStreams = 64;  // more than any SDP the module sends
constexpr size_t kMaxOffers = 2;    // current and previous
// Longer than any value a session can be given: a module request line is at
// most 16384 bytes, an rtpproxy command less. (It was 4096, below what the
// module socket accepts: one call with a 5 KB From URI made the whole file be
// refused at restart.)
constexpr size_t kMaxStringBytes = 65536;
constexpr double kMaxMillis = 9007199254740992.0;  // 2^53: exact in a double
// Times are Unix seconds (or monotonic ones converted to them): up to 2096,
// where microseconds still fit a double's 53 bits.
constexpr double kMaxTimeSeconds = 4e9;

void put_endpoint(JsonWriter& w, JsonKey key, const IpEndpoint& e) {
  w.field(key, format_ip_endpoint(e));
}

// Unset values (zero, false, null) are left out everywhere: the reader takes
// a missing key as its default, older versions too. Most fields of a call
// being set up are unset, and a record is written at every change.
template <typename T>
void put_if_set(JsonWriter& w, JsonKey key, const std::optional<T>& v) {
  if (v) w.field(key, *v);
}

void write_leg(JsonWriter& w, const LegState& l) {
  w.begin_object();
  if (l.learned) {
    w.field("l", true);
    put_endpoint(w, "r", l.remote);
  }
  if (l.has_obsolete) put_endpoint(w, "o", l.obsolete);
  if (l.by_fallback) w.field("fb", true);
  if (l.has_ssrc) w.field("ssrc", static_cast<uint64_t>(l.ssrc));
  if (l.got_media) w.field("gm", true);
  if (l.in_kernel) w.field("k", true);
  struct Number {
    JsonKey key;
    uint64_t value;
  };
  const Number numbers[] = {{"ep", l.epoch},
                            {"fe", l.followed_epoch},
                            {"p", l.packets},
                            {"b", l.bytes},
                            {"d", l.dropped},
                            {"f", l.foreign},
                            {"ms", l.media_seen},
                            {"kp", l.kernel_packets},
                            {"kb", l.kernel_bytes},
                            {"klp", l.kernel_live_packets},
                            {"klb", l.kernel_live_bytes}};
  for (const auto& [key, value] : numbers)
    if (value) w.field(key, value);
  if (l.last_seen != 0) w.field("ls", l.last_seen);
  w.end_object();
}

void write_party(JsonWriter& w, const PartyState& p) {
  w.begin_object();
  if (p.known) {
    w.field("k", true);
    w.field("ip", format_ip(p.ip));
    w.field("port", static_cast<int64_t>(p.port));
    w.field("since", p.known_since);
  }
  if (p.direction) w.field("dir", static_cast<int64_t>(p.direction));
  if (p.ice) w.field("ice", true);
  if (p.hold_ip) w.field("hold", true);
  if (p.asymmetric) w.field("asym", true);
  if (!p.signaling_ip.is_any()) w.field("sig", format_ip(p.signaling_ip));
  w.end_object();
}

void write_stream(JsonWriter& w, const StreamState& s) {
  w.begin_object();
  if (s.id) {
    w.field("id", s.id);
    w.field("slot", static_cast<uint64_t>(s.slot));
  }
  w.field("type", s.media_type);
  w.field("status", s.status);
  if (s.alive) w.field("alive", true);
  w.key("ports");
  w.begin_array();
  w.value(static_cast<int64_t>(s.rtp_port[0]));
  w.value(static_cast<int64_t>(s.rtp_port[1]));
  w.end_array();
  if (s.family[0] != IpAddress::Family::V4 || s.family[1] != IpAddress::Family::V4) {
    w.key("families");  // absent: both IPv4 (records of older versions too)
    w.begin_array();
    w.value(static_cast<int64_t>(s.family[0]));
    w.value(static_cast<int64_t>(s.family[1]));
    w.end_array();
  }
  w.field("created", s.created);
  put_if_set(w, "start", s.start_wall);
  put_if_set(w, "confirmed", s.confirmed);
  put_if_set(w, "end", s.end_wall);
  put_if_set(w, "first_media", s.first_media);
  w.field("activity", s.last_activity);
  if (s.hold_since != 0) w.field("hold_since", s.hold_since);
  if (s.timeout_wait) w.field("wait", static_cast<int64_t>(s.timeout_wait));
  w.key("codec");
  w.begin_array();
  w.value(s.codec[0]);
  w.value(s.codec[1]);
  w.end_array();
  if (s.was_on_hold) w.field("on_hold", true);
  if (s.kernel_refused) w.field("kref", true);
  put_if_set(w, "strict", s.strict_latching);
  w.key("party");
  w.begin_array();
  write_party(w, s.party[0]);
  write_party(w, s.party[1]);
  w.end_array();
  w.key("leg");
  w.begin_array();
  for (const auto& sub : s.leg)
    for (const LegState& l : sub) write_leg(w, l);
  w.end_array();
  w.end_object();
}

// ---- reading -------------------------------------------------------------

using Value = rapidjson::Value;

struct Reader {
  std::string& error;
  bool fail(const std::string& why) {
    if (error.empty()) error = why;
    return false;
  }
  const Value* member(const Value& o, const char* key) {
    auto it = o.FindMember(key);
    return it == o.MemberEnd() ? nullptr : &it->value;
  }
  bool str(const Value& o, const char* key, std::string& out, bool required = true) {
    const Value* v = member(o, key);
    if (!v) return !required || fail(std::string("missing '") + key + "'");
    if (!v->IsString()) return fail(std::string("'") + key + "' is not a string");
    if (v->GetStringLength() > kMaxStringBytes)
      return fail(std::string("'") + key + "' is longer than " + std::to_string(kMaxStringBytes) +
                  " bytes");
    out = json_string_bytes(std::string_view(v->GetString(), v->GetStringLength()));
    return true;
  }
  bool opt_str(const Value& o, const char* key, std::optional<std::string>& out) {
    const Value* v = member(o, key);
    if (!v || v->IsNull()) {
      out.reset();
      return true;
    }
    std::string s;
    if (!str(o, key, s)) return false;
    out = std::move(s);
    return true;
  }
  bool flag(const Value& o, const char* key, bool& out) {
    const Value* v = member(o, key);
    if (!v) {
      out = false;
      return true;
    }
    if (!v->IsBool()) return fail(std::string("'") + key + "' is not a boolean");
    out = v->GetBool();
    return true;
  }
  bool opt_flag(const Value& o, const char* key, std::optional<bool>& out) {
    const Value* v = member(o, key);
    if (!v || v->IsNull()) {
      out.reset();
      return true;
    }
    bool b;
    if (!flag(o, key, b)) return false;
    out = b;
    return true;
  }
  bool u64(const Value& o, const char* key, uint64_t& out, uint64_t max = UINT64_MAX) {
    const Value* v = member(o, key);
    if (!v) {
      out = 0;
      return true;
    }
    if (!v->IsUint64() || v->GetUint64() > max)
      return fail(std::string("'") + key + "' is not a number in range");
    out = v->GetUint64();
    return true;
  }
  bool i64(const Value& v, int64_t& out, const char* what) {
    if (!v.IsInt64()) return fail(std::string(what) + " is not an integer");
    out = v.GetInt64();
    return true;
  }
  bool num(const Value& o, const char* key, double& out) {
    const Value* v = member(o, key);
    if (!v) {
      out = 0;
      return true;
    }
    if (!v->IsNumber() || !std::isfinite(v->GetDouble()))
      return fail(std::string("'") + key + "' is not a number");
    // Every number here is a time in seconds: bounded, and kept to the
    // microsecond, so that a record re-encodes to itself (a 16-digit
    // decimal parses back exactly; rapidjson's exact parser is not UB-free).
    const double d = v->GetDouble();
    if (d < -kMaxTimeSeconds || d > kMaxTimeSeconds)
      return fail(std::string("'") + key + "' is not a time");
    out = std::round(d * 1e6) / 1e6;
    return true;
  }
  bool opt_num(const Value& o, const char* key, std::optional<double>& out) {
    const Value* v = member(o, key);
    if (!v || v->IsNull()) {
      out.reset();
      return true;
    }
    double d;
    if (!num(o, key, d)) return false;
    out = d;
    return true;
  }
  bool endpoint(const Value& o, const char* key, IpEndpoint& out, bool& present) {
    const Value* v = member(o, key);
    present = v != nullptr;
    if (!v) return true;
    if (!v->IsString()) return fail(std::string("'") + key + "' is not an address");
    auto e = parse_ip_endpoint(std::string_view(v->GetString(), v->GetStringLength()));
    if (!e) return fail(std::string("'") + key + "' is not an address:port");
    out = *e;
    return true;
  }
  bool opt_ip(const Value& o, const char* key, IpAddress& out) {
    out = IpAddress{};
    return !member(o, key) || ip_address(o, key, out);
  }
  bool ip_address(const Value& o, const char* key, IpAddress& out) {
    std::string s;
    if (!str(o, key, s)) return false;
    auto ip = parse_ip(s);
    if (!ip) return fail(std::string("'") + key + "' is not an IP address");
    out = *ip;
    return true;
  }

  bool leg(const Value& o, LegState& l) {
    if (!o.IsObject()) return fail("a leg is not an object");
    bool present = false;
    uint64_t v = 0;
    if (!flag(o, "l", l.learned) || !endpoint(o, "r", l.remote, present)) return false;
    if (l.learned && !present) return fail("a learned leg without its address");
    if (!endpoint(o, "o", l.obsolete, l.has_obsolete) || !flag(o, "fb", l.by_fallback))
      return false;
    l.has_ssrc = member(o, "ssrc") != nullptr;
    if (!u64(o, "ssrc", v, UINT32_MAX)) return false;
    l.ssrc = static_cast<uint32_t>(v);
    if (!u64(o, "ep", v, UINT32_MAX)) return false;
    l.epoch = static_cast<uint32_t>(v);
    if (!u64(o, "fe", v, UINT32_MAX)) return false;
    l.followed_epoch = static_cast<uint32_t>(v);
    return flag(o, "gm", l.got_media) && u64(o, "p", l.packets) && u64(o, "b", l.bytes) &&
           u64(o, "d", l.dropped) && u64(o, "f", l.foreign) && u64(o, "ms", l.media_seen) &&
           flag(o, "k", l.in_kernel) && u64(o, "kp", l.kernel_packets) &&
           u64(o, "kb", l.kernel_bytes) && u64(o, "klp", l.kernel_live_packets) &&
           u64(o, "klb", l.kernel_live_bytes) && num(o, "ls", l.last_seen);
  }

  bool party(const Value& o, PartyState& p) {
    if (!o.IsObject()) return fail("a party is not an object");
    uint64_t port = 0, dir = 0;
    if (!flag(o, "k", p.known) || !opt_ip(o, "ip", p.ip) || !u64(o, "port", port, 65535) ||
        !u64(o, "dir", dir, 3) || !flag(o, "ice", p.ice) || !flag(o, "hold", p.hold_ip) ||
        !flag(o, "asym", p.asymmetric) || !num(o, "since", p.known_since) ||
        !opt_ip(o, "sig", p.signaling_ip))
      return false;
    p.port = static_cast<uint16_t>(port);
    p.direction = static_cast<int>(dir);
    return true;
  }

  bool pair_array(const Value& o, const char* key, const Value*& first, const Value*& second) {
    const Value* v = member(o, key);
    if (!v || !v->IsArray() || v->Size() != 2)
      return fail(std::string("'") + key + "' is not a pair");
    first = &(*v)[0];
    second = &(*v)[1];
    return true;
  }

  bool stream(const Value& o, StreamState& s) {
    if (!o.IsObject()) return fail("a stream is not an object");
    uint64_t slot = UINT32_MAX;
    if (!u64(o, "id", s.id) || (member(o, "slot") && !u64(o, "slot", slot, UINT32_MAX)))
      return false;
    s.slot = static_cast<uint32_t>(slot);
    if (!str(o, "type", s.media_type) || !str(o, "status", s.status) || !flag(o, "alive", s.alive))
      return false;
    const Value *a, *b;
    if (!pair_array(o, "ports", a, b)) return false;
    for (int i = 0; i < 2; ++i) {
      const Value& p = i == 0 ? *a : *b;
      if (!p.IsUint() || p.GetUint() > 65535 || p.GetUint() % 2 != 0)
        return fail("a stream port is not an even port number");
      s.rtp_port[i] = static_cast<uint16_t>(p.GetUint());
    }
    if (member(o, "families")) {
      if (!pair_array(o, "families", a, b)) return false;
      for (int i = 0; i < 2; ++i) {
        const Value& f = i == 0 ? *a : *b;
        if (!f.IsUint() || (f.GetUint() != 4 && f.GetUint() != 6))
          return fail("a stream family is neither 4 nor 6");
        s.family[i] = f.GetUint() == 6 ? IpAddress::Family::V6 : IpAddress::Family::V4;
      }
    }
    uint64_t wait = 0;
    if (!num(o, "created", s.created) || !opt_num(o, "start", s.start_wall) ||
        !opt_num(o, "confirmed", s.confirmed) || !opt_num(o, "end", s.end_wall) ||
        !opt_num(o, "first_media", s.first_media) || !num(o, "activity", s.last_activity) ||
        !num(o, "hold_since", s.hold_since) || !u64(o, "wait", wait, 1u << 30) ||
        !flag(o, "on_hold", s.was_on_hold) || !flag(o, "kref", s.kernel_refused) ||
        !opt_flag(o, "strict", s.strict_latching))
      return false;
    s.timeout_wait = static_cast<int>(wait);
    if (!pair_array(o, "codec", a, b)) return false;
    if (!a->IsString() || !b->IsString() || a->GetStringLength() > 64 || b->GetStringLength() > 64)
      return fail("a codec is not a short string");
    s.codec[0] = json_string_bytes(std::string_view(a->GetString(), a->GetStringLength()));
    s.codec[1] = json_string_bytes(std::string_view(b->GetString(), b->GetStringLength()));
    if (!pair_array(o, "party", a, b) || !party(*a, s.party[0]) || !party(*b, s.party[1]))
      return false;
    const Value* legs = member(o, "leg");
    if (!legs || !legs->IsArray() || legs->Size() != 4) return fail("'leg' is not four legs");
    for (rapidjson::SizeType i = 0; i < 4; ++i)
      if (!leg((*legs)[i], s.leg[i / 2][i % 2])) return false;
    return true;
  }

  bool cseq_pair(const Value& o, const char* key, std::optional<std::pair<int64_t, int64_t>>& out) {
    const Value* v = member(o, key);
    if (!v || v->IsNull()) {
      out.reset();
      return true;
    }
    if (!v->IsArray() || v->Size() != 2) return fail(std::string("'") + key + "' is not a pair");
    int64_t a, b;
    if (!i64((*v)[0], a, key) || !i64((*v)[1], b, key)) return false;
    out = std::pair{a, b};
    return true;
  }
};

}  // namespace

std::string session_state_to_json(const SessionState& s) {
  std::string out;
  append_session_state_json(out, s);
  return out;
}

void append_session_state_json(std::string& out, const SessionState& s) {
  JsonWriter w(out);
  w.begin_object();
  w.field("call_id", s.call_id);
  w.field("from_tag", s.from_tag);
  w.field("to_tag", s.to_tag);
  w.field("from_uri", s.from_uri);
  w.field("to_uri", s.to_uri);
  w.field("caller_ua", s.caller_ua);
  w.field("callee_ua", s.callee_ua);
  put_if_set(w, "username", s.username);
  if (!s.dialog_id.empty()) w.field("dialog_id", s.dialog_id);
  put_if_set(w, "strict", s.strict_latching);
  if (s.owner) w.field("owner", s.owner);
  w.field("created", s.created);
  put_if_set(w, "start", s.start_wall);
  put_if_set(w, "ended", s.ended_wall);
  struct Cseq {
    JsonKey key;
    const std::optional<std::pair<int64_t, int64_t>>* c;
  };
  for (auto [key, c] : {Cseq{"cseq", &s.cseq}, Cseq{"prev_cseq", &s.previous_cseq}}) {
    if (!*c) continue;
    w.key(key);
    w.begin_array();
    w.value((*c)->first);
    w.value((*c)->second);
    w.end_array();
  }
  w.key("offers");
  w.begin_array();
  for (const OfferState& o : s.offers) {
    w.begin_object();
    w.key("cseq");
    w.begin_array();
    w.value(o.cseq_caller);
    w.value(o.cseq_callee);
    w.end_array();
    w.field("by", static_cast<int64_t>(o.offerer));
    w.key("streams");
    w.begin_array();
    for (size_t i : o.streams) w.value(static_cast<uint64_t>(i));
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.key("streams");
  w.begin_array();
  for (const StreamState& st : s.streams) write_stream(w, st);
  w.end_array();
  w.end_object();
}

bool session_state_from_json(std::string_view json, SessionState& out, std::string& error) {
  error.clear();
  out = SessionState{};
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  if (d.HasParseError() || !d.IsObject()) {
    error = "not a JSON object";
    return false;
  }
  Reader r{error};
  if (!r.str(d, "call_id", out.call_id) || !r.str(d, "from_tag", out.from_tag) ||
      !r.str(d, "to_tag", out.to_tag) || !r.str(d, "from_uri", out.from_uri) ||
      !r.str(d, "to_uri", out.to_uri) || !r.str(d, "caller_ua", out.caller_ua) ||
      !r.str(d, "callee_ua", out.callee_ua) || !r.opt_str(d, "username", out.username) ||
      !r.opt_flag(d, "strict", out.strict_latching) || !r.u64(d, "owner", out.owner) ||
      !r.num(d, "created", out.created) || !r.opt_num(d, "start", out.start_wall) ||
      !r.opt_num(d, "ended", out.ended_wall) || !r.cseq_pair(d, "cseq", out.cseq) ||
      !r.cseq_pair(d, "prev_cseq", out.previous_cseq) ||
      (r.member(d, "dialog_id") && !r.str(d, "dialog_id", out.dialog_id)))
    return false;
  if (out.call_id.empty() || out.from_tag.empty()) return r.fail("empty call_id or from_tag");
  const Value* streams = r.member(d, "streams");
  if (!streams || !streams->IsArray() || streams->Size() > kMaxStreams)
    return r.fail("'streams' is not a list of at most 64 streams");
  out.streams.resize(streams->Size());
  for (rapidjson::SizeType i = 0; i < streams->Size(); ++i)
    if (!r.stream((*streams)[i], out.streams[i])) return false;
  const Value* offers = r.member(d, "offers");
  if (!offers || !offers->IsArray() || offers->Size() > kMaxOffers)
    return r.fail("'offers' is not a list of at most 2 offers");
  for (const Value& o : offers->GetArray()) {
    if (!o.IsObject()) return r.fail("an offer is not an object");
    OfferState os;
    const Value *a, *b;
    uint64_t by = 0;
    if (!r.pair_array(o, "cseq", a, b) || !r.i64(*a, os.cseq_caller, "cseq") ||
        !r.i64(*b, os.cseq_callee, "cseq") || !r.u64(o, "by", by, 1))
      return false;
    os.offerer = static_cast<int>(by);
    const Value* idx = r.member(o, "streams");
    if (!idx || !idx->IsArray() || idx->Size() > kMaxStreams)
      return r.fail("an offer's 'streams' is not a list");
    for (const Value& i : idx->GetArray()) {
      if (!i.IsUint() || i.GetUint() >= out.streams.size())
        return r.fail("an offer names a stream that does not exist");
      os.streams.push_back(i.GetUint());
    }
    out.offers.push_back(std::move(os));
  }
  // The offers are those of cseq and previous_cseq, as Session keeps them.
  for (const auto* c : {&out.cseq, &out.previous_cseq}) {
    if (!*c) continue;
    bool found = false;
    for (const OfferState& o : out.offers)
      found = found || (o.cseq_caller == (*c)->first && o.cseq_callee == (*c)->second);
    if (!found) return r.fail("no offer for a cseq the session names");
  }
  return true;
}

// "<n> <last_activity> <20 numbers per stream>..." (packets bytes dropped
// foreign media_seen for [rtp caller, rtp callee, rtcp caller, rtcp callee]).
std::string counters_to_text(const CounterCheckpoint& c) {
  std::string out = std::to_string(c.streams.size());
  char buf[32];
  for (const auto& st : c.streams) {
    out += ' ';
    const double ms = st.last_activity * 1000;
    out += std::to_string(ms > 0 && ms < kMaxMillis ? static_cast<uint64_t>(std::llround(ms)) : 0);
    for (const auto& sub : st.leg)
      for (const auto& l : sub)
        for (uint64_t v : {l.packets, l.bytes, l.dropped, l.foreign, l.media_seen}) {
          auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
          out += ' ';
          out.append(buf, p);
        }
  }
  return out;
}

bool counters_from_text(std::string_view text, CounterCheckpoint& out, std::string& error) {
  out.streams.clear();
  const char* p = text.data();
  const char* end = p + text.size();
  auto next = [&](uint64_t& v) {
    while (p < end && *p == ' ') ++p;
    auto [q, ec] = std::from_chars(p, end, v);
    if (ec != std::errc() || q == p) return false;
    p = q;
    return true;
  };
  uint64_t n = 0;
  if (!next(n) || n > kMaxStreams) {
    error = "counter checkpoint without a stream count";
    return false;
  }
  out.streams.resize(n);
  for (auto& st : out.streams) {
    uint64_t ms = 0;
    if (!next(ms) || ms >= static_cast<uint64_t>(kMaxMillis)) {
      error = "counter checkpoint cut short";
      return false;
    }
    st.last_activity = static_cast<double>(ms) / 1000.0;
    for (auto& sub : st.leg)
      for (auto& l : sub)
        for (uint64_t* v : {&l.packets, &l.bytes, &l.dropped, &l.foreign, &l.media_seen})
          if (!next(*v)) {
            error = "counter checkpoint cut short";
            return false;
          }
  }
  if (p != end) {
    error = "counter checkpoint with trailing text";
    return false;
  }
  return true;
}

void apply_counters(SessionState& s, const CounterCheckpoint& c) {
  if (c.streams.size() != s.streams.size()) return;  // from before a re-INVITE's record
  for (size_t i = 0; i < c.streams.size(); ++i) {
    StreamState& st = s.streams[i];
    if (c.streams[i].last_activity > st.last_activity)
      st.last_activity = c.streams[i].last_activity;
    for (int k = 0; k < 2; ++k)
      for (int side = 0; side < 2; ++side) {
        LegState& l = st.leg[k][side];
        const auto& n = c.streams[i].leg[k][side];
        if (n.packets < l.packets) continue;
        l.packets = n.packets;
        l.bytes = n.bytes;
        l.dropped = n.dropped;
        l.foreign = n.foreign;
        l.media_seen = n.media_seen;
      }
  }
}

}  // namespace mp::relay
