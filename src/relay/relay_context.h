// What every stream of a relay shares: the loop, the relay's addresses, the
// port pool, the forwarding policy and the clocks. Owned by RelayEngine and
// handed to sessions and streams by reference.
#pragma once

#include <uv.h>

#include <time.h>

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "common/address.h"
#include "common/ip_address.h"
#include "relay/latching.h"
#include "relay/port_pool.h"

namespace mp::relay {

class MediaStream;
class MediaPump;
class Session;
class CounterTable;
class KernelOffload;

// Told when a session's state changed, so that the state journal writes its
// record again (relay_engine.cpp). Called on the packet path: must neither
// allocate nor block.
class StateSink {
 public:
  virtual void session_changed(Session* s) = 0;

 protected:
  ~StateSink() = default;
};

struct RelayContext {
  uv_loop_t* loop = nullptr;
  MediaPump* pump = nullptr;           // reads and writes every media socket
  Ipv4 relay_ip;                       // IPv4 media sockets bind here (and the relay's name)
  Ipv4 reply_ip;                       // advertised_ip if set, else relay_ip
  std::optional<IpAddress> relay_ip6;  // IPv6 media address, if the relay has one
  std::optional<IpAddress> reply_ip6;  // its advertised form (advertised_ip's IPv6 entry)
  PortPool* ports = nullptr;
  std::vector<Cidr> routable_private_ranges;
  int transmit_every = 1;
  uint64_t relayed_bytes = 0;    // every byte forwarded in userspace, for bps_relayed
  LatchPolicy latch_policy;      // [Relay] latching, latch_window, rebind_silence
  uint64_t foreign_packets = 0;  // datagrams refused by the latching policy

  // In-kernel forwarding (nullptr: userspace only).
  KernelOffload* offload = nullptr;
  int handover_packets = 1;
  double kernel_polled_at = 0;    // monotonic time of the last counter reading
  bool kernel_poll_soon = false;  // a stream wants a reading before the next second

  StateSink* state = nullptr;        // nullptr: no state file
  CounterTable* counters = nullptr;  // live counters in a shared mapping, or nullptr
  uint64_t last_stream_id = 0;       // ids of streams (counter table owners)

  bool serves(IpAddress::Family f) const { return f == IpAddress::Family::V4 || relay_ip6; }
  // The address media sockets of family `f` bind to / that replies give
  // (serves(f) must hold).
  IpAddress bind_ip(IpAddress::Family f) const {
    return f == IpAddress::Family::V6 ? *relay_ip6 : IpAddress::from_v4(relay_ip);
  }
  IpAddress reply_address(IpAddress::Family f) const {
    return f == IpAddress::Family::V6 ? reply_ip6.value_or(*relay_ip6)
                                      : IpAddress::from_v4(reply_ip);
  }

  // Monotonic seconds (loop time: cheap, updated once per loop iteration).
  double now() const { return static_cast<double>(uv_now(loop)) / 1000.0; }
  // Unix time with sub-second precision, for reports.
  static double wall_now() {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
  }
};

}  // namespace mp::relay
