// Placeholder until the hang-up client lands (issue #12).
#include "dispatcher/hangup_client.h"

#include "common/log.h"

namespace mp::dispatcher {

struct HangupClient::Impl {};

HangupClient::HangupClient(uv_loop_t*, const HangupConfig&, const std::string&)
    : impl_(std::make_unique<Impl>()) {}
HangupClient::~HangupClient() = default;
bool HangupClient::start(std::string&) { return true; }
void HangupClient::hang_up(const std::string& dialog_id, const std::string& call_id) {
  LOG_WARN("hang-up of dialog %s (call %s) not sent: not built yet", log_safe(dialog_id).c_str(),
           log_safe(call_id).c_str());
}
void HangupClient::write_metrics(metrics::Exposition&) const {}
void HangupClient::close() {}

}  // namespace mp::dispatcher
