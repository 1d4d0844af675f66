// Streaming the management `sessions` answer (sessions_dump.h).
//
// The control flow is a loop spread over the event loop: step() asks the
// current relay for a batch unless a reply is awaited or the client has no
// room; the reply (on_batch, or on_whole for a relay that only knows
// `sessions`) is written and yields, and the idle callback runs step() again
// on the next loop iteration, after the loop has polled for I/O. Replies of
// the in-process link arrive inside send(); yielding after each keeps one
// batch per iteration there too. Callbacks hold weak references only, so a
// dump dropped by its owner (client gone) is never called back into.
#include "dispatcher/sessions_dump.h"

#include <algorithm>

#include "common/log.h"
#include "dispatcher/dispatcher.h"
#include "protocol/session_batch.h"

namespace mp::dispatcher {

struct SessionsDump::Idle {
  uv_idle_t handle;
  std::weak_ptr<SessionsDump> owner;
};

std::shared_ptr<SessionsDump> SessionsDump::start(uv_loop_t* loop, const Dispatcher& dispatcher,
                                                  Output out) {
  std::shared_ptr<SessionsDump> d(new SessionsDump(loop, dispatcher, std::move(out)));
  d->idle_ = new Idle;
  uv_idle_init(loop, &d->idle_->handle);
  d->idle_->handle.data = d->idle_;
  d->idle_->owner = d;
  if (!d->out_.write("[")) {
    d->stop();
    return d;
  }
  d->yield();
  return d;
}

SessionsDump::SessionsDump(uv_loop_t* loop, const Dispatcher& dispatcher, Output out)
    : loop_(loop), dispatcher_(dispatcher), out_(std::move(out)), relays_(dispatcher.relays()) {}

SessionsDump::~SessionsDump() {
  stop();
}

void SessionsDump::stop() {
  done_ = true;
  waiting_since_ = 0;
  if (!idle_) return;
  uv_idle_stop(&idle_->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_->handle),
           [](uv_handle_t* h) { delete static_cast<Idle*>(h->data); });
  idle_ = nullptr;
}

void SessionsDump::cancel() {
  stop();
}

void SessionsDump::drained() {
  if (waiting_since_ && !done_) yield();
}

void SessionsDump::yield() {
  if (!idle_) return;
  uv_idle_start(&idle_->handle, [](uv_idle_t* h) {
    uv_idle_stop(h);
    if (auto self = static_cast<Idle*>(h->data)->owner.lock()) self->step();
  });
}

void SessionsDump::step() {
  if (done_ || awaiting_reply_) return;
  auto keep = shared_from_this();
  if (!out_.has_room()) {
    if (!waiting_since_) waiting_since_ = std::max<uint64_t>(uv_now(loop_), 1);
    return;
  }
  waiting_since_ = 0;
  const std::vector<RelayLink*>& live = dispatcher_.relays();
  while (index_ < relays_.size() &&
         std::find(live.begin(), live.end(), relays_[index_]) == live.end())
    next_relay();
  if (index_ == relays_.size()) {
    finish();
    return;
  }
  RelayLink* relay = relays_[index_];
  std::weak_ptr<SessionsDump> weak = keep;
  awaiting_reply_ = true;
  if (legacy_) {
    relay->send("sessions", {}, [weak](std::optional<std::string> payload) {
      if (auto self = weak.lock()) self->on_whole(std::move(payload));
    });
    return;
  }
  relay->send(std::string(protocol::kSessionsFromCommand),
              protocol::sessions_from_headers({cursor_, kBatchSessions}),
              [weak](std::optional<std::string> payload) {
                if (auto self = weak.lock()) self->on_batch(std::move(payload));
              });
}

void SessionsDump::on_batch(std::optional<std::string> payload) {
  awaiting_reply_ = false;
  if (done_) return;
  auto keep = shared_from_this();
  if (!payload) {  // no answer: the relay contributes what it listed so far
    next_relay();
    yield();
    return;
  }
  if (*payload == "error" && batches_ == 0) {  // a relay older than sessions_from
    legacy_ = true;
    yield();
    return;
  }
  std::string why;
  const auto batch = protocol::parse_sessions_batch(*payload, why);
  if (!batch || (batch->more && batch->cursor <= cursor_)) {
    LOG_LIMITED(Warning, nullptr, "relay %s answered sessions_from with '%.40s' (%s); skipped",
                relays_[index_]->relay_ip().c_str(), log_safe(*payload).c_str(),
                batch ? "the cursor did not advance" : why.c_str());
    next_relay();
    yield();
    return;
  }
  ++batches_;
  const bool more = batch->more;
  const uint64_t cursor = batch->cursor;
  const size_t offset = static_cast<size_t>(batch->objects.data() - payload->data());
  emit(std::move(*payload), offset);
  if (more)
    cursor_ = cursor;
  else
    next_relay();
  yield();
}

void SessionsDump::on_whole(std::optional<std::string> payload) {
  awaiting_reply_ = false;
  if (done_) return;
  auto keep = shared_from_this();
  // The relay's array without its brackets; a failed relay contributes nothing.
  if (payload && payload->size() >= 2 && payload->front() == '[' && payload->back() == ']') {
    payload->pop_back();
    emit(std::move(*payload), 1);
  }
  next_relay();
  yield();
}

void SessionsDump::emit(std::string text, size_t offset) {
  if (done_ || text.find_first_not_of(" \t\r\n", offset) == std::string::npos) return;
  text.replace(0, offset, any_ ? ", " : "");
  any_ = true;
  if (!out_.write(text)) stop();
}

void SessionsDump::next_relay() {
  ++index_;
  cursor_ = 0;
  batches_ = 0;
  legacy_ = false;
}

void SessionsDump::finish() {
  const bool written = out_.write("]\r\n");
  stop();
  if (written && out_.finished) out_.finished();
}

}  // namespace mp::dispatcher
