// One relay UDP port: a non-blocking UDP socket bound to the relay address,
// watched by a libuv poll handle.
//
// Owns the socket's lifetime and its receive path. Each readiness event reads
// ONE recvmmsg batch (kBatch datagrams) into static buffers shared by every
// socket of the loop (callbacks run one at a time), so the data path
// allocates nothing per packet, and a busy socket cannot hold the event loop:
// whatever is left is read on the next loop pass (level-triggered), after
// the control sockets have had their turn. Sends are synchronous sendto(): a
// full socket buffer drops the packet and counts it, it never queues. A
// socket is closed with close(), after which its owner is forgotten and the
// memory is released by libuv's close callback; packets already read in the
// same batch are discarded.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/address.h"

namespace mp::relay {

class MediaSocketOwner {
 public:
  virtual void on_datagram(int tag, const sockaddr_in& from, const uint8_t* data, size_t len) = 0;

 protected:
  ~MediaSocketOwner() = default;
};

class MediaSocket {
 public:
  // Opens and binds; returns nullptr with `error` (uv error code) on failure.
  static MediaSocket* open(uv_loop_t* loop, Endpoint local, MediaSocketOwner* owner, int tag,
                           int& error);
  // Stops receiving and frees the socket asynchronously. Do not use it afterwards.
  void close();

  // Sends one datagram; returns false if the kernel refused it (e.g. buffer full).
  bool send(const sockaddr_in& to, const uint8_t* data, size_t len);

  const Endpoint& local() const { return local_; }

 private:
  MediaSocket() = default;
  static void on_readable(uv_poll_t* p, int status, int events);
  static void on_closed(uv_handle_t* h);

  uv_poll_t poll_;
  int fd_ = -1;
  Endpoint local_;
  MediaSocketOwner* owner_ = nullptr;
  int tag_ = 0;
};

// Process-wide data-path counters (all loops; only one loop runs the relay).
struct DataPathStats {
  uint64_t received = 0;
  uint64_t send_failures = 0;
};
DataPathStats& data_path_stats();

}  // namespace mp::relay
