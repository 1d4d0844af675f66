// The management `sessions` answer, streamed (spec C.2; mediaproxy.8,
// "Management interface").
//
// One SessionsDump writes one client's answer: "[", every relay's sessions
// joined with ", ", "]" CRLF, byte for byte what joining every relay's whole
// `sessions` array gives, but never holding more than one batch of it. It
// asks one relay at a time for the next batch (`sessions_from`,
// protocol/session_batch.h; a relay that does not know the command is asked
// `sessions` once, as before), writes the batch, and asks for the next only
// after yielding to the loop once (an idle handle), so that proxy-module
// requests are answered between batches, and only while the client's unsent
// output is below the high-water mark the owner checks in has_room();
// otherwise it waits for drained(). So a dump delays other work by one
// batch at most, and its memory is one batch plus the client's queue,
// however many sessions there are.
//
// Relays are those the dispatcher knew when the dump began, minus any that
// went away since; one that fails or stops answering contributes what it
// listed so far (a failing relay is silently omitted, as the spec says).
// Sessions created or ended during the dump may or may not be listed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatcher/relay_link.h"

namespace mp::dispatcher {

class Dispatcher;

class SessionsDump : public std::enable_shared_from_this<SessionsDump> {
 public:
  // Sessions asked of a relay per batch.
  static constexpr size_t kBatchSessions = 100;

  struct Output {
    // Appends to the client's answer; false when the client is gone.
    std::function<bool(std::string_view)> write;
    // True while the client's unsent output is below the high-water mark.
    std::function<bool()> has_room;
    // The answer's last byte is written. Not called if the dump was
    // cancelled or the client went away.
    std::function<void()> finished;
  };

  // Begins a dump; its first output is written from the loop, not from here.
  static std::shared_ptr<SessionsDump> start(uv_loop_t* loop, const Dispatcher& dispatcher,
                                             Output out);
  ~SessionsDump();
  SessionsDump(const SessionsDump&) = delete;
  SessionsDump& operator=(const SessionsDump&) = delete;

  // The client's output drained: continue if the dump was waiting for it.
  void drained();
  // Stops for good: no more output, no finished().
  void cancel();
  bool done() const { return done_; }
  // uv_now() when the dump began waiting for the client to read (0: not waiting).
  uint64_t waiting_since() const { return waiting_since_; }

 private:
  struct Idle;
  SessionsDump(uv_loop_t* loop, const Dispatcher& dispatcher, Output out);
  void yield();
  void step();
  void on_batch(std::optional<std::string> payload);
  void on_whole(std::optional<std::string> payload);
  // Writes the objects that start at `offset` of `text`, after ", " if
  // something came before; nothing if there are none.
  void emit(std::string text, size_t offset);
  void next_relay();
  void finish();
  void stop();

  uv_loop_t* loop_;
  const Dispatcher& dispatcher_;
  Output out_;
  std::vector<RelayLink*> relays_;
  size_t index_ = 0;     // the relay being listed
  uint64_t cursor_ = 0;  // its cursor (sessions_from)
  size_t batches_ = 0;   // its batches so far
  bool legacy_ = false;  // it does not know sessions_from
  bool any_ = false;     // an object has been written
  bool awaiting_reply_ = false;
  bool done_ = false;
  uint64_t waiting_since_ = 0;
  Idle* idle_ = nullptr;  // freed by its close callback
};

}  // namespace mp::dispatcher
