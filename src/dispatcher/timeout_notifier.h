// Timeout notifications of the rtpproxy front end: when the media of a call
// that a U command gave a notify socket to times out, "<tag>\n" is written to
// that socket, as Sippy rtpproxy does (Kamailio's rtpproxy `timeout_socket`).
//
// One persistent stream connection per target (tcp:IP:PORT or unix:/path),
// opened on first use and reopened once on a write error; notifications wait
// in a bounded queue while it connects. Nothing here blocks the loop; a
// target that cannot be reached loses its notification with one log line.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

namespace mp::dispatcher {

class TimeoutNotifier {
 public:
  explicit TimeoutNotifier(uv_loop_t* loop);
  ~TimeoutNotifier();
  TimeoutNotifier(const TimeoutNotifier&) = delete;
  TimeoutNotifier& operator=(const TimeoutNotifier&) = delete;

  // Queues `tag` + "\n" for `target` (already checked against the policy).
  void send(const std::string& target, const std::string& tag);
  // Closes every connection; queued notifications are dropped.
  void close();

  uint64_t delivered() const { return delivered_; }
  uint64_t lost() const { return lost_; }

  struct Target;
  bool closed() const { return closed_; }
  void reconnect(Target& t) { connect(t); }

 private:
  void connect(Target& t);
  void flush(Target& t);
  void drop(Target& t, const char* why);

  uv_loop_t* loop_;
  std::map<std::string, std::unique_ptr<Target>> targets_;
  uint64_t delivered_ = 0, lost_ = 0;
  bool closed_ = false;
};

}  // namespace mp::dispatcher
