// The relay link of the combined role: dispatcher and relay in one process.
//
// Every command reaches the RelayEngine as a RelayCommandView over the
// dispatcher's own headers, not a copy; the view skips empty values, so the
// engine reads what the TLS link's parser would make of the bytes (spec B.2,
// where serialize_command() leaves them out). The engine's reply payload
// comes back as is: no text round trip, which cost about a tenth of a call
// set-up's CPU. The wire format itself is exercised by the
// distributed roles' tests and the protocol unit tests.
//
// It lives in app/, where both roles are wired, because it joins them: the
// dispatcher sees only the RelayLink interface, never the relay engine (nor,
// through it, the kernel backend).
#pragma once

#include <cstdint>
#include <string>

#include "dispatcher/relay_link.h"
#include "relay/relay_engine.h"

namespace mp::app {

class InProcessLink final : public dispatcher::RelayLink {
 public:
  InProcessLink(relay::RelayEngine& engine, std::string relay_ip, uint64_t owner_id);

  void send(const std::string& command, const std::vector<protocol::Header>& headers,
            ReplyCallback on_reply) override;
  void on_expired(ExpiredCallback cb) override { expired_ = std::move(cb); }
  std::string relay_ip() const override { return relay_ip_; }
  bool usable() const override { return !halting_; }
  void mark_halting() override { halting_ = true; }

  // Called by the engine's expired sink for sessions owned by this link.
  void deliver_expired(const std::string& json);

 private:
  relay::RelayEngine& engine_;
  std::string relay_ip_;
  uint64_t owner_;
  uint64_t next_seq_ = 0;
  bool halting_ = false;
  ExpiredCallback expired_;
};

}  // namespace mp::app
