// In-process relay link of the combined role (in_process_link.h).
#include "app/in_process_link.h"

#include "common/log.h"
#include "protocol/relay_link.h"

namespace mp::app {

InProcessLink::InProcessLink(relay::RelayEngine& engine, std::string relay_ip, uint64_t owner_id)
    : engine_(engine), relay_ip_(std::move(relay_ip)), owner_(owner_id) {}

void InProcessLink::send(const std::string& command, const std::vector<protocol::Header>& headers,
                         ReplyCallback on_reply) {
  protocol::RelayCommand cmd;
  cmd.name = command;
  cmd.seq = next_seq_++;
  cmd.headers = headers;
  const std::string wire = protocol::serialize_command(cmd);

  // Relay side: frame and parse exactly as the TLS link will.
  std::string reply_wire;
  auto status = relay_side_.feed(wire, [&](protocol::ParseResult&& parsed) {
    std::string why;
    if (!parsed.request) {
      LOG_ERROR("in-process link: relay could not parse a command: %s", parsed.error.c_str());
      return;
    }
    uint64_t seq = 0;
    std::optional<protocol::RelayCommand> rc =
        protocol::to_relay_command(std::move(*parsed.request), &why);
    if (!rc) {
      LOG_ERROR("in-process link: bad command line: %s", why.c_str());
      return;
    }
    seq = rc->seq;
    reply_wire = protocol::serialize_reply(seq, engine_.handle(*rc, owner_));
  });
  if (status != protocol::RequestFramer::Status::Ok || reply_wire.empty()) {
    on_reply(std::nullopt);
    return;
  }

  // Dispatcher side: parse the reply line.
  std::string why;
  std::string_view line(reply_wire);
  if (line.size() >= 2 && line.substr(line.size() - 2) == "\r\n") line.remove_suffix(2);
  auto msg = protocol::parse_relay_message(line, &why);
  if (!msg || msg->kind != protocol::RelayMessage::Kind::Reply || msg->seq != cmd.seq) {
    LOG_ERROR("in-process link: unexpected reply '%s': %s", log_safe(line).c_str(), why.c_str());
    on_reply(std::nullopt);
    return;
  }
  on_reply(std::move(msg->payload));
}

void InProcessLink::deliver_expired(const std::string& json) {
  const std::string wire = protocol::serialize_expired(json);
  std::string why;
  std::string_view line(wire);
  line.remove_suffix(2);
  auto msg = protocol::parse_relay_message(line, &why);
  if (!msg || msg->kind != protocol::RelayMessage::Kind::Expired) {
    LOG_ERROR("in-process link: malformed expired report: %s", why.c_str());
    return;
  }
  if (expired_) expired_(msg->payload);
}

}  // namespace mp::app
