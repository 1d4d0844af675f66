// In-process relay link of the combined role (in_process_link.h).
#include "app/in_process_link.h"

#include "protocol/relay_link.h"

namespace mp::app {

InProcessLink::InProcessLink(relay::RelayEngine& engine, std::string relay_ip, uint64_t owner_id)
    : engine_(engine), relay_ip_(std::move(relay_ip)), owner_(owner_id) {}

void InProcessLink::send(const std::string& command, const std::vector<protocol::Header>& headers,
                         ReplyCallback on_reply) {
  protocol::RelayCommand cmd;
  cmd.name = command;
  cmd.seq = next_seq_++;
  // As serialize_command() does: a header with an empty value is not sent.
  cmd.headers.reserve(headers.size());
  for (const protocol::Header& h : headers)
    if (!h.value.empty()) cmd.headers.push_back(h);
  on_reply(engine_.handle(cmd, owner_));
}

void InProcessLink::deliver_expired(const std::string& json) {
  if (expired_) expired_(json);
}

}  // namespace mp::app
