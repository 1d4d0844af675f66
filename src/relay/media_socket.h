// One relay UDP port: a non-blocking UDP socket bound to the relay address of
// its family (IPv4 or IPv6),
// registered with the relay's MediaPump (media_pump.h), which reads it.
//
// Owns the socket's lifetime and knows its owner (the stream that gets its
// datagrams). Forwarded datagrams are queued on the pump and leave in one
// sendmmsg() per batch; a full socket buffer drops the packet and tells the
// owner, it never queues. A socket is closed with close(): the owner is
// forgotten and datagrams already read in the same batch are discarded; the
// pump keeps the socket bound as an idle socket of its port (see
// MediaPump::park) when it has room, else the descriptor is closed at once (a
// new stream may want the port before the loop turns) and the memory goes
// when the pump's current pass ends. open() takes a port's idle socket back.
#pragma once

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/ip_address.h"
#include "relay/media_pump.h"

namespace mp::relay {

class MediaSocketOwner : public SendFailureSink {
 public:
  virtual void on_datagram(int tag, const SocketAddress& from, const uint8_t* data, size_t len) = 0;

 protected:
  ~MediaSocketOwner() = default;
};

class MediaSocket {
 public:
  // Opens, binds and registers; returns nullptr with `error` (uv error code)
  // on failure.
  static MediaSocket* open(MediaPump* pump, const IpEndpoint& local, MediaSocketOwner* owner,
                           int tag, int& error);
  // Stops receiving and closes the descriptor. Do not use it afterwards.
  void close();

  // Forwards one datagram through the pump's send queue (see MediaPump::send);
  // a failure is reported to `sink` with `cookie`.
  void forward(const SocketAddress& to, const uint8_t* data, size_t len, SendFailureSink* sink,
               int cookie) {
    pump_->send(fd_, &local_, to, data, len, sink, cookie);
  }
  // Sends one datagram at once; false if the kernel refused it.
  bool send_now(const SocketAddress& to, const uint8_t* data, size_t len);

  const IpEndpoint& local() const { return local_; }
  int fd() const { return fd_; }
  MediaSocketOwner* owner() const { return owner_; }
  int tag() const { return tag_; }

 private:
  friend class MediaPump;
  MediaSocket() = default;
  ~MediaSocket() = default;

  MediaPump* pump_ = nullptr;
  int fd_ = -1;
  IpEndpoint local_;
  MediaSocketOwner* owner_ = nullptr;
  int tag_ = 0;
  // Batched reads (media_pump.cpp): how many receives the next round queues
  // for this socket, and how many reads in a row found all they asked for.
  uint8_t reads_wanted_ = 1;
  uint8_t full_reads_ = 0;
};

}  // namespace mp::relay
