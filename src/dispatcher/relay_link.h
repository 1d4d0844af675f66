// The dispatcher's view of one relay.
//
// A RelayLink carries relay-protocol commands (spec B.3: update, remove,
// summary, sessions, query) to one relay and brings back the reply payload,
// and it delivers the relay's unsolicited `expired` reports. Two transports
// implement it: the TLS link of a relay that joined the dispatcher
// (relay_listener.cpp) and, in the combined role, the in-process link
// (app/in_process_link.h). The dispatcher only ever talks to this
// interface, so relay selection, failover and accounting are the same
// whichever transport is underneath. Headers are the module request's own
// (protocol::Header), passed through without conversion.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "protocol/request.h"

namespace mp::dispatcher {

class RelayLink {
 public:
  virtual ~RelayLink() = default;

  // Reply payload, or nullopt when the relay did not answer (timeout,
  // disconnect). May be called before send() returns.
  using ReplyCallback = std::function<void(std::optional<std::string> payload)>;
  virtual void send(const std::string& command, const std::vector<protocol::Header>& headers,
                    ReplyCallback on_reply) = 0;

  // Receives each `expired <json>` report of this relay.
  using ExpiredCallback = std::function<void(const std::string& json)>;
  virtual void on_expired(ExpiredCallback cb) = 0;

  // The relay's address as shown to operators and matched against the
  // `media_relay` header.
  virtual std::string relay_ip() const = 0;
  // Connected and not halting: may be given new sessions.
  virtual bool usable() const = 0;
  // A reply "halting" was seen on this link.
  virtual void mark_halting() = 0;
};

}  // namespace mp::dispatcher
