// In-process relay link of the combined role (in_process_link.h).
#include "app/in_process_link.h"

#include "protocol/relay_link.h"

namespace mp::app {

InProcessLink::InProcessLink(relay::RelayEngine& engine, std::string relay_ip, uint64_t owner_id)
    : engine_(engine), relay_ip_(std::move(relay_ip)), owner_(owner_id) {}

void InProcessLink::send(const std::string& command, const std::vector<protocol::Header>& headers,
                         ReplyCallback on_reply) {
  // The dispatcher's headers as they are: the view skips empty values, as
  // serialize_command() leaves them out of a command on the wire.
  const protocol::RelayCommandView cmd{command, next_seq_++, headers};
  on_reply(engine_.handle(cmd, owner_));
}

void InProcessLink::deliver_expired(const std::string& json) {
  if (expired_) expired_(json);
}

}  // namespace mp::app
