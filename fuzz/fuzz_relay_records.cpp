// Fuzz target for the dispatcher's handling of what relays send back
// (dispatcher/dispatcher.h): `expired` reports, the payloads of `remove`,
// `sessions`, `summary` and `query` replies, and the call-id list a
// reconnecting relay hands to adopt_sessions().
//
// A real Dispatcher runs on a uv loop with two fake relays (RelayLink) that
// answer from a script or with what a relay would say ("127.0.0.1 40000" to
// an update, a statistics record to a remove), at once or later (deferred,
// as a TLS link does). Each input first sets up calls through
// Dispatcher::handle(), among them call-ids with a NUL byte, a tab, valid
// and invalid UTF-8, and one made of the input's first line, then:
//   1. the whole input is an expired report of either relay, the payload of
//      both relays' `sessions` and `summary` replies and of a `remove` and
//      `query` reply, a string field of every call's expired record (built
//      as the relay builds it, with JsonWriter), and the call-id list of a
//      relay that reconnects;
//   2. on a fresh dispatcher, the input is a script: each line's first byte
//      picks an operation (expire a call, raw expired report with `$N`
//      standing for call N's quoted id, update, remove, script a relay's
//      next answer, sessions, summary, query, disconnect, reconnect with a
//      call-id list, deferred replies on/off, deliver deferred replies, mark
//      halting), its second byte the call or relay, the rest the payload.
// Every log line is captured and checked. A model of the dispatcher's table (which call is on which
// relay, with its dialog id, kept after expiry or not) follows every operation. Invariants:
//   * no crash, leak or sanitizer report; every request, query, sessions and
//     summary is answered exactly once; the loop has no handle left after
//     close();
//   * every log line is one line of printable ASCII, even for a call-id that
//     carries an LF and a fake timestamp (issue 11: log injection);
//   * an expired report never adds a record and ends at most one call; a
//     valid report for a call of that relay ends it (observers told once,
//     byte-exact call-id) and removes its record unless the call was answered
//     with a dialog id and did not just move to another ICE path, whatever
//     bytes the call-id holds; a report from another relay changes nothing;
//   * the table holds exactly the calls of the model: a successful update
//     adds its call on the relay that answered, a `removed` reply removes it,
//     adopt_sessions() keeps exactly the relay's listed calls (and expired
//     records) and a disconnect orphans the relay's calls; the sessions
//     metric counts the calls not kept after expiry;
//   * joined `sessions` replies are one JSON array holding every element
//     when each relay answered a JSON array; `summary` is one JSON array
//     with one object per relay when each answer that looks like an object
//     is one; `query` passes on only objects.
#include <rapidjson/document.h>
#include <uv.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/json_writer.h"
#include "common/log.h"
#include "dispatcher/dispatcher.h"
#include "dispatcher/relay_link.h"
#include "dispatcher/sessions_dump.h"
#include "metrics/exposition.h"
#include "protocol/request.h"

using namespace mp;

namespace {

FILE* g_real_stderr = nullptr;  // while LogCapture has replaced stderr

void check(bool ok, const char* what) {
  if (!ok) {
    if (g_real_stderr) stderr = g_real_stderr;
    std::fprintf(stderr, "fuzz_relay_records: invariant violated: %s\n", what);
    std::abort();
  }
}

// As check(), naming the call (escaped) in the message.
void check_call(bool ok, const char* what, std::string_view call_id) {
  if (!ok) {
    if (g_real_stderr) stderr = g_real_stderr;
    std::fprintf(stderr, "fuzz_relay_records: call-id \"%s\": ", log_safe(call_id).c_str());
    check(false, what);
  }
}

uv_loop_t* loop() {
  static uv_loop_t* l = [] {
    auto* fresh = new uv_loop_t;
    check(uv_loop_init(fresh) == 0, "uv_loop_init");
    return fresh;
  }();
  return l;
}

// Captures the log lines written while it lives (at debug level, so that
// every line the dispatcher can write is formatted) and then checks them:
// printable ASCII, each line starting with log::write()'s timestamp, none
// with the 1999 timestamp that kForgedLine tries to inject. glibc's stderr
// is a plain variable: it points at a memory stream meanwhile; sanitizer and
// libFuzzer reports do not go through it.
class LogCapture {
 public:
  LogCapture() {
    std::fflush(stderr);
    mem_ = open_memstream(&buf_, &len_);
    check(mem_ != nullptr, "open_memstream");
    g_real_stderr = stderr;
    stderr = mem_;
    log::reset_limits();
    log::set_level(log::Level::Debug);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  ~LogCapture() {
    log::set_level(log::Level::Critical);
    stderr = g_real_stderr;
    std::fclose(mem_);
    const std::string_view text(buf_, len_);
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      check(end != std::string_view::npos, "log lines end with LF");
      check_line(text.substr(start, end - start));
      start = end + 1;
    }
    std::free(buf_);
    g_real_stderr = nullptr;
  }

 private:
  static void check_line(std::string_view line) {
    for (char ch : line)
      check(static_cast<unsigned char>(ch) >= 0x20 && static_cast<unsigned char>(ch) < 0x7f,
            "log lines are printable ASCII");
    // "2026-12-03T10:00:00.000Z "
    static constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ ";
    check(line.size() > kShape.size(), "log line has a timestamp");
    for (size_t i = 0; i < kShape.size(); ++i)
      check(kShape[i] == 'd' ? line[i] >= '0' && line[i] <= '9' : line[i] == kShape[i],
            "log line starts with its timestamp");
    check(line.substr(0, 5) != "1999-", "no forged log line");
  }

  char* buf_ = nullptr;
  size_t len_ = 0;
  FILE* mem_ = nullptr;
};

// A call-id that tries to add a log line of its own (module requests are
// split at CRLF only, so a bare LF reaches the dispatcher).
constexpr std::string_view kForgedLine = "evil\n1999-01-01T00:00:00.000Z INFO    forged\x1b[2J";

// The type of the JSON value `text` holds (and an array's size), or nothing
// when it is not one JSON value. RapidJSON takes a NUL byte for the end of
// the text ("{}\0x" parses as {}), so any NUL makes it not JSON here.
std::optional<rapidjson::Type> json_type(std::string_view text, size_t* elements = nullptr) {
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  // A small pool on the stack: the default one mallocs 64 KiB per document.
  char pool[4096];
  rapidjson::MemoryPoolAllocator<> allocator(pool, sizeof pool);
  rapidjson::GenericDocument<rapidjson::UTF8<>, rapidjson::MemoryPoolAllocator<>> d(&allocator);
  d.Parse(text.data(), text.size());
  if (d.HasParseError()) return std::nullopt;
  if (elements && d.IsArray()) *elements = d.Size();
  return d.GetType();
}

class World;

class FakeLink final : public mp::dispatcher::RelayLink {
 public:
  FakeLink(World& world, int index, std::string ip)
      : world_(world), index_(index), ip_(std::move(ip)) {}

  void send(const std::string& command, const std::vector<protocol::Header>& headers,
            ReplyCallback on_reply) override;
  void on_expired(ExpiredCallback cb) override { expired_ = std::move(cb); }
  std::string relay_ip() const override { return ip_; }
  bool usable() const override { return connected && !halting; }
  void mark_halting() override { halting = true; }

  void report_expired(const std::string& json) {
    check(static_cast<bool>(expired_), "the dispatcher listens for expired reports");
    expired_(json);
  }
  // Answers the deferred commands (in order, or newest first).
  void flush(bool reversed);
  // What the relay would answer.
  std::string default_answer(const std::string& command,
                             const std::vector<protocol::Header>& headers) const;

  int index() const { return index_; }

  bool connected = true;
  bool halting = false;
  bool deferred = false;
  std::deque<std::optional<std::string>> script;  // next answers, whatever the command

 private:
  void deliver(std::optional<std::string> reply, const ReplyCallback& cb);

  World& world_;
  int index_;
  std::string ip_;
  ExpiredCallback expired_;
  std::vector<std::pair<std::optional<std::string>, ReplyCallback>> pending_;
};

struct ModelRecord {
  int relay = -1;  // -1: its relay is disconnected
  std::string relay_ip;
  std::string dialog;
  bool expired = false;  // kept after an expired report, for the proxy's remove
};

struct SessionEnd {
  std::string call_id;
  bool timed_out;
};

class World {
 public:
  World() : dispatcher_(loop(), DispatcherConfig{}) {
    links_.push_back(std::make_unique<FakeLink>(*this, 0, "127.0.0.1"));
    links_.push_back(std::make_unique<FakeLink>(*this, 1, "127.0.0.2"));
    for (auto& l : links_) dispatcher_.add_relay(l.get());
    dispatcher_.add_session_end_observer([this](const std::string& call_id, bool timed_out) {
      ends_.push_back({call_id, timed_out});
    });
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  ~World() {
    for (auto& l : links_) {
      l->deferred = false;
      l->flush(false);
    }
    check(outstanding_ == 0, "every request and query is answered");
    check_table();
    size_t live = 0;
    for (const auto& [id, rec] : model_)
      if (!rec.expired) ++live;
    metrics::Exposition m;
    dispatcher_.write_metrics(m);
    check(m.text().find("\nmediaproxy_dispatcher_sessions " + std::to_string(live) + "\n") !=
              std::string::npos,
          "the sessions gauge counts the calls not yet expired");
    dispatcher_.close();
    uv_run(loop(), UV_RUN_NOWAIT);
    check(!uv_loop_alive(loop()), "no handle left on the loop after close()");
  }

  FakeLink& link(size_t i) { return *links_[i % links_.size()]; }
  size_t call_count() const { return calls_.size(); }
  const std::string& call(size_t i) const { return calls_[i % calls_.size()]; }
  void add_call(std::string id, std::string dialog) {
    calls_.push_back(std::move(id));
    dialogs_.push_back(std::move(dialog));
  }
  const std::string& dialog_of(size_t i) const { return dialogs_[i % dialogs_.size()]; }
  FakeLink* answering = nullptr;  // the link whose reply is being delivered

  // The table holds exactly the model's calls.
  void check_table() const {
    check(dispatcher_.session_count() == model_.size(), "table size matches the model");
    for (const auto& [id, rec] : model_)
      check(dispatcher_.has_session(id), "modelled call present");
  }

  // A module `update` (a new call, or one the table has).
  void update(const std::string& call_id, const std::string& dialog, int prefer) {
    protocol::Request req;  // the headers the dispatcher reads; the relay is fake
    req.command = "update";
    req.headers = {{"call_id", call_id}, {"from_tag", "t1"}};
    if (!dialog.empty()) req.headers.push_back({"dialog_id", dialog});
    if (prefer >= 0) req.headers.push_back({"media_relay", link(prefer).relay_ip()});
    auto it = model_.find(call_id);
    const bool live = it != model_.end() && !it->second.expired;
    if (live && it->second.relay >= 0 && it->second.dialog.empty()) it->second.dialog = dialog;
    const bool orphan = live && it->second.relay < 0;
    ++outstanding_;
    dispatcher_.handle(req, [this, call_id, dialog, live, orphan](std::string reply) {
      --outstanding_;
      if (orphan) check(reply == "error", "no failover for a call whose relay is gone");
      if (live || reply == "error") return;
      check(answering != nullptr, "a new call's answer comes from a relay");
      model_[call_id] = ModelRecord{answering->index(), answering->relay_ip(), dialog, false};
      check(dispatcher_.has_session(call_id), "an answered update creates the record");
    });
    check_table();
  }

  // A module `remove`.
  void remove(const std::string& call_id) {
    protocol::Request req;
    req.command = "remove";
    req.headers = {{"call_id", call_id}, {"from_tag", "t1"}, {"to_tag", "t2"}};
    auto it = model_.find(call_id);
    const bool kept = it != model_.end() && it->second.expired;
    const bool live = it != model_.end() && !kept && it->second.relay >= 0;
    const bool known = it != model_.end();
    const size_t ends_before = ends_.size();
    ++outstanding_;
    dispatcher_.handle(req, [this, call_id, kept, live, known, ends_before](std::string reply) {
      --outstanding_;
      check(reply == "removed" || reply == "error", "remove answers removed or error");
      if (kept) {
        check(reply == "removed", "a kept record is removed without asking the relay");
        check(ends_.size() == ends_before, "a kept record's call already ended");
      }
      if (!known || (!live && !kept)) check(reply == "error", "remove of an unknown call fails");
      if (reply == "removed") {
        model_.erase(call_id);
        check(!dispatcher_.has_session(call_id), "removed means forgotten");
        if (live) {
          check(!ends_.empty() && ends_.back().call_id == call_id && !ends_.back().timed_out,
                "a removed call's end is observed");
        }
      }
    });
    check_table();
  }

  // An expired report built as the relay builds it. `streams`: 0 none,
  // 1 empty, 2 all unselected ICE candidates, 3 mixed.
  void expire(size_t call_index, int relay, bool answered, int streams, std::string_view filler) {
    const std::string& call_id = call(call_index);
    JsonWriter w;
    w.begin_object();
    w.field("call_id", call_id);
    w.field("from_tag", "t1");
    w.field("from_uri", filler);
    w.field("to_uri", "b@y");
    w.key("start_time");
    if (answered)
      w.value(1700000000.25);
    else
      w.null();
    w.field("duration", int64_t{7});
    if (streams > 0) {
      w.key("streams");
      w.begin_array();
      for (int i = 0; i < (streams == 1 ? 0 : 2); ++i) {
        w.begin_object();
        w.field("status", streams == 3 && i == 1 ? "closed" : "unselected ICE candidate");
        w.field("caller_codec", "G711u");
        w.end_object();
      }
      w.end_array();
    }
    w.end_object();
    const std::string json = w.take();

    auto it = model_.find(call_id);
    const bool ours = it != model_.end() && it->second.relay == relay;
    // A record without "streams" counts as all ICE, as the dispatcher reads it.
    const bool all_ice = streams == 0 || streams == 2;
    const bool keep = ours && !it->second.dialog.empty() && answered && !all_ice;
    const size_t count_before = dispatcher_.session_count();
    const size_t ends_before = ends_.size();
    link(relay).report_expired(json);
    check_call(dispatcher_.session_count() <= count_before, "an expired report never adds a record",
               call_id);
    if (!ours) {
      check_call(ends_.size() == ends_before, "a report for another relay's call ends nothing",
                 call_id);
      check_table();
      return;
    }
    check_call(ends_.size() == ends_before + 1, "a valid expired report ends its call once",
               call_id);
    check_call(ends_.back().call_id == call_id, "the ended call-id is byte-exact", call_id);
    check_call(ends_.back().timed_out == !all_ice, "timed out unless it moved to another ICE path",
               call_id);
    check_call(dispatcher_.has_session(call_id) == keep,
               "an expired call is forgotten unless answered with a dialog id", call_id);
    if (keep)
      it->second.expired = true;
    else
      model_.erase(it);
    check_table();
  }

  // Any text as an expired report of `relay`.
  void expire_raw(int relay, const std::string& json) {
    const size_t count_before = dispatcher_.session_count();
    const size_t ends_before = ends_.size();
    link(relay).report_expired(json);
    check(dispatcher_.session_count() <= count_before, "an expired report never adds a record");
    check(ends_.size() <= ends_before + 1, "an expired report ends at most one call");
    if (ends_.size() == ends_before + 1) {
      const std::string& id = ends_.back().call_id;
      auto it = model_.find(id);
      check(it != model_.end() && it->second.relay == relay, "only a call of that relay ends");
      if (dispatcher_.has_session(id)) {
        check(!it->second.dialog.empty(), "only a call with a dialog id is kept");
        it->second.expired = true;
      } else {
        model_.erase(it);
      }
    }
    check_table();
  }

  // The relay reconnects and reports the calls it holds.
  void reconnect(int relay, const std::vector<std::string>& ids) {
    FakeLink& l = link(relay);
    if (l.connected) disconnect(relay);
    l.connected = true;
    l.halting = false;
    dispatcher_.add_relay(&l);
    std::vector<dispatcher::AdoptedSession> held_calls;
    for (const auto& id : ids) held_calls.push_back({id, "", "", "", std::nullopt});
    dispatcher_.adopt_sessions(&l, held_calls);
    std::map<std::string, bool> held;
    for (const auto& id : ids) held[id] = true;
    for (auto it = model_.begin(); it != model_.end();) {
      const bool mine = it->second.relay == l.index() ||
                        (it->second.relay < 0 && it->second.relay_ip == l.relay_ip());
      if (mine && !held.count(it->first) && !it->second.expired)
        it = model_.erase(it);
      else
        ++it;
    }
    for (const auto& id : ids) {
      ModelRecord& rec = model_[id];
      rec.relay = l.index();
      rec.relay_ip = l.relay_ip();
      check(dispatcher_.has_session(id), "an adopted call is in the table");
    }
    check_table();
  }

  // The relay's connection drops: its pending commands fail.
  void disconnect(int relay) {
    FakeLink& l = link(relay);
    if (!l.connected) return;
    dispatcher_.remove_relay(&l);
    l.connected = false;
    for (auto& [id, rec] : model_)
      if (rec.relay == l.index()) rec.relay = -1;
    l.flush(false);
    check_table();
  }

  // The management `sessions` answer, streamed by a SessionsDump; the fake
  // relays predate `sessions_from`, so each is asked `sessions` once and the
  // scripted payloads are joined. The loop runs until the answer is complete.
  void sessions() {
    ++outstanding_;
    std::string joined;
    bool finished = false;
    mp::dispatcher::SessionsDump::Output out;
    out.write = [&joined](std::string_view text) {
      joined += text;
      return true;
    };
    out.has_room = [] { return true; };
    out.finished = [&finished] { finished = true; };
    auto dump = mp::dispatcher::SessionsDump::start(loop(), dispatcher_, std::move(out));
    for (int turns = 0; !finished && turns < 64; ++turns) uv_run(loop(), UV_RUN_NOWAIT);
    check(finished, "a sessions answer completes once its relays have answered");
    dump.reset();
    {
      --outstanding_;
      check(joined.size() >= 4 && joined.substr(joined.size() - 2) == "\r\n",
            "sessions answer is one CRLF-terminated line");
      joined.resize(joined.size() - 2);
      check(joined.front() == '[' && joined.back() == ']', "sessions answer is bracketed");
      bool all_arrays = true;
      size_t total = 0;
      for (size_t i = 0; i < gathered_.size(); ++i) {
        if (!gathered_[i]) continue;
        size_t n = 0;
        if (json_type(*gathered_[i], &n) == rapidjson::kArrayType)
          total += n;
        else
          all_arrays = false;
      }
      gathered_.clear();
      if (!all_arrays) return;
      size_t n = 0;
      check(json_type(joined, &n) == rapidjson::kArrayType,
            "relays' JSON arrays join into one JSON array");
      check(n == total, "the joined array holds every relay's elements");
    }
  }

  void summary() {
    const size_t relays = dispatcher_.relay_count();
    ++outstanding_;
    dispatcher_.summary([this, relays](std::string joined) {
      --outstanding_;
      bool objects = true;
      for (const auto& r : gathered_)
        if (r && !r->empty() && r->front() == '{' && json_type(*r) != rapidjson::kObjectType)
          objects = false;
      gathered_.clear();
      if (!objects) return;
      size_t n = 0;
      check(json_type(joined, &n) == rapidjson::kArrayType, "summary is one JSON array");
      check(n == relays, "summary has one object per relay");
    });
  }

  void query(const std::string& call_id) {
    ++outstanding_;
    dispatcher_.query(call_id, "t1", "t2", [this](std::string reply) {
      --outstanding_;
      check(reply == "error" || (!reply.empty() && reply.front() == '{'), "query passes objects");
    });
  }

  // Replies the sessions/summary joins saw, for their checks (one gather at
  // a time: both are only started with immediate answers).
  std::vector<std::optional<std::string>> gathered_;

 private:
  dispatcher::Dispatcher dispatcher_;
  std::vector<std::unique_ptr<FakeLink>> links_;
  std::vector<std::string> calls_;
  std::vector<std::string> dialogs_;
  std::map<std::string, ModelRecord> model_;
  std::vector<SessionEnd> ends_;
  size_t outstanding_ = 0;
};

void FakeLink::send(const std::string& command, const std::vector<protocol::Header>& headers,
                    ReplyCallback on_reply) {
  if (!connected) {  // as TlsRelayLink: a link that is down fails at once
    on_reply(std::nullopt);
    return;
  }
  std::optional<std::string> reply;
  if (command == "sessions_from") {  // answered at once, without taking a scripted answer
    deliver(default_answer(command, headers), on_reply);
    return;
  }
  if (!script.empty()) {
    reply = std::move(script.front());
    script.pop_front();
  } else {
    reply = default_answer(command, headers);
  }
  if (command == "sessions" || command == "summary") world_.gathered_.push_back(reply);
  if (deferred)
    pending_.emplace_back(std::move(reply), std::move(on_reply));
  else
    deliver(std::move(reply), on_reply);
}

void FakeLink::deliver(std::optional<std::string> reply, const ReplyCallback& cb) {
  FakeLink* outer = world_.answering;
  world_.answering = this;
  cb(std::move(reply));
  world_.answering = outer;
}

void FakeLink::flush(bool reversed) {
  auto pending = std::move(pending_);
  pending_.clear();
  if (reversed) std::reverse(pending.begin(), pending.end());
  for (auto& [reply, cb] : pending) deliver(connected ? std::move(reply) : std::nullopt, cb);
}

std::string FakeLink::default_answer(const std::string& command,
                                     const std::vector<protocol::Header>& headers) const {
  if (command == "update") return ip_ + " 40000";
  if (command == "sessions") return "[]";
  if (command == "sessions_from") return "error";  // a relay older than the command
  if (command == "summary") return "{\"ip\": " + json_quote(ip_) + ", \"status\": \"active\"}";
  // remove and query: the session's statistics record.
  JsonWriter w;
  w.begin_object();
  for (const auto& h : headers)
    if (h.name == "call_id" || h.name == "from_tag") w.field(h.name, h.value);
  w.key("start_time");
  w.null();
  w.key("streams");
  w.raw("[]");
  w.end_object();
  return w.take();
}

// `$N` (N a digit) in `text` becomes call N's id, JSON-quoted or raw.
std::string substitute(const World& w, std::string_view text, bool quoted) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '$' && i + 1 < text.size() && text[i + 1] >= '0' && text[i + 1] <= '9') {
      const std::string& id = w.call(static_cast<size_t>(text[i + 1] - '0'));
      out += quoted ? json_quote(id) : id;
      ++i;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i)
    if (i == text.size() || text[i] == sep) {
      if (i > start) out.emplace_back(text.substr(start, i - start));
      start = i + 1;
    }
  return out;
}

// Calls every input starts with: plain ids, and byte strings a SIP proxy may
// pass on unchanged (mediaproxy.8: call-ids are byte strings).
void set_up_calls(World& w, std::string_view input) {
  w.add_call("call-0", "d0");
  w.add_call("call-1", "");
  w.add_call("caf\xc3\xa9@x", "d2");
  w.add_call("bad\xff\xfe@x", "");
  w.add_call(std::string("nul\0tab\t\x7f", 9), "d4");
  w.add_call(std::string(kForgedLine), "");
  // The input's first line (at most 48 bytes), as the module would pass it.
  const std::string_view first = input.substr(0, std::min(input.find('\n'), size_t{48}));
  if (!first.empty() && first.find("\r\n") == std::string_view::npos && first.back() != '\r')
    w.add_call(std::string(first), "d5");
  for (size_t i = 0; i < w.call_count(); ++i) w.update(w.call(i), w.dialog_of(i), int(i % 2));
}

void whole_input(std::string_view input) {
  World w;
  set_up_calls(w, input);
  const std::string text(input);
  // (b) reply payloads (call i is on relay i % 2).
  w.link(0).script.push_back(text);
  w.sessions();
  w.link(1).script.push_back(text);
  w.link(0).script.push_back("[{\"call_id\": \"call-0\"}]");
  w.sessions();
  w.link(0).script.push_back(text);
  w.summary();
  w.link(0).script.push_back(text);
  w.query(w.call(0));
  w.link(1).script.push_back(text);
  w.remove(w.call(1));
  // (a) expired reports.
  std::string_view report = input;
  if (report.substr(0, 8) == "expired ") report.remove_prefix(8);
  w.expire_raw(0, std::string(report));
  w.expire_raw(1, substitute(w, report, true));
  for (size_t i = 0; i < w.call_count(); ++i)
    w.expire(i, int(i % 2), (i / 2) % 2 == 0, int(i % 4), i == 0 ? input : "a@x");
  // (c) a reconnecting relay's call-ids.
  w.reconnect(1, split(substitute(w, input, false), '\n'));
  w.reconnect(0, split(input, ','));
}

void script(std::string_view input) {
  World w;
  set_up_calls(w, input);
  size_t lines = 0;
  for (const std::string& line : split(input, '\n')) {
    if (++lines > 64) break;
    const auto op = static_cast<uint8_t>(line[0]) % 13;
    const auto a = line.size() > 1 ? static_cast<uint8_t>(line[1]) : uint8_t{0};
    const std::string_view arg = std::string_view(line).substr(std::min(line.size(), size_t{2}));
    const uint8_t flags = arg.empty() ? 0 : static_cast<uint8_t>(arg[0]);
    FakeLink& l = w.link(a & 1);
    switch (op) {
      case 0:
        w.expire(a, (a >> 4) & 1, flags & 1, (flags >> 1) & 3, arg);
        break;
      case 1:
        w.expire_raw(a & 1, substitute(w, arg, true));
        break;
      case 2:
        w.update(w.call(a), (a & 0x10) ? std::string() : w.dialog_of(a),
                 (a & 0x20) ? int((a >> 6) & 1) : -1);
        break;
      case 3:
        w.remove(w.call(a));
        break;
      case 4:  // the relay's next answer ("" : no answer)
        if (arg.empty())
          l.script.push_back(std::nullopt);
        else
          l.script.push_back(substitute(w, arg, true));
        break;
      case 5:
      case 6: {
        const size_t bar = arg.find('|');
        w.link(0).deferred = w.link(1).deferred = false;
        w.link(0).flush(false);
        w.link(1).flush(false);
        w.link(0).script.push_front(std::string(arg.substr(0, bar)));
        if (bar != std::string_view::npos)
          w.link(1).script.push_front(std::string(arg.substr(bar + 1)));
        w.gathered_.clear();
        if (op == 5)
          w.sessions();
        else
          w.summary();
        w.link(0).script.clear();
        w.link(1).script.clear();
        break;
      }
      case 7:
        l.script.push_front(std::string(arg));
        w.query(w.call(a >> 1));
        break;
      case 8:
        w.disconnect(a & 1);
        break;
      case 9:
        w.reconnect(a & 1, split(substitute(w, arg, false), ','));
        break;
      case 10:
        l.deferred = !l.deferred;
        break;
      case 11:
        l.flush(a & 2);
        break;
      default:
        l.mark_halting();
        break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const LogCapture capture;
  whole_input(input);
  if (input.find('\n') != std::string_view::npos) script(input);  // a script of one line: no
  return 0;
}
