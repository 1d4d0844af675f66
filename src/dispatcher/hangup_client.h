// Hang-up of calls whose media died, through the SIP proxy's own management
// interface (spec F.3 for OpenSIPS; Kamailio's dialog RPC for Kamailio).
//
// The dialog id says which proxy owns the dialog: OpenSIPS's mediaproxy
// module sends a decimal number, Kamailio's sends "h_entry:h_id". A numeric
// id goes to OpenSIPS as the MI request `dlg_end_dlg`, an "h_entry:h_id" id
// to Kamailio as the JSON-RPC request `dlg.end_dlg` over its jsonrpcs
// datagram transport; each through a datagram socket of our own bound in the
// runtime directory so that the reply can come back. Never blocks: requests
// go out on the event loop, replies are matched by id, a request without a
// reply after 3 s counts as a timeout. The outcome is logged and counted.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "common/config.h"
#include "metrics/exposition.h"

namespace mp::dispatcher {

class HangupClient {
 public:
  HangupClient(uv_loop_t* loop, const HangupConfig& cfg, const std::string& runtime_dir);
  ~HangupClient();
  // Binds the reply sockets of the configured proxies; false with `error`
  // when that is impossible (the runtime directory is not writable).
  bool start(std::string& error);
  // Asks the proxy that owns `dialog_id` to end the dialog. `call_id` is for
  // the log only.
  void hang_up(const std::string& dialog_id, const std::string& call_id);
  // mediaproxy_hangup_requests_total{proxy, result}.
  void write_metrics(metrics::Exposition& out) const;
  // Releases the sockets and timers; run the loop afterwards.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mp::dispatcher
