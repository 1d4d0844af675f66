// The relay's userspace data path: every media socket of a relay, read and
// written in bounded passes.
//
// All media sockets are registered (level-triggered) in one epoll instance
// of their own, and that epoll descriptor is the only thing the libuv loop
// watches for media. When it is readable, one *pass* runs: epoll_wait() for
// up to kEvents ready sockets, one recvmmsg() batch from each, the owners'
// forwarding decisions queued as outgoing datagrams, and the queue flushed
// with sendmmsg() after each socket's batch. A pass stops after kPassBudget
// datagrams, and the loop turns before the next one, so control sockets and
// timers are served at least every few milliseconds however hot the media
// path is (an update's latency under overload no longer grows with the
// number of busy streams). Level-triggered epoll hands out ready sockets
// round-robin, so one hot stream cannot starve the others.
//
// Buffers are static and shared (one loop runs the relay; passes run one at
// a time): nothing is allocated per packet. A socket closed during a pass is
// kept until the pass ends, because events already fetched may name it.
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include "common/ip_address.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace mp::relay {

class MediaSocket;

// Told when a datagram it had queued could not be sent (socket buffer full,
// unreachable destination): the owner counts it as dropped, not forwarded.
class SendFailureSink {
 public:
  virtual void on_send_failed(int cookie, size_t len) = 0;

 protected:
  ~SendFailureSink() = default;
};

class MediaPump {
 public:
  // Datagrams read per socket and readiness event.
  static constexpr unsigned kBatch = 16;
  // Ready sockets fetched per epoll_wait().
  static constexpr int kEvents = 64;
  // Datagrams handled per pass before the loop gets its turn.
  static constexpr unsigned kPassBudget = 1024;
  // Largest datagram relayed; larger ones are truncated and dropped.
  static constexpr size_t kMaxDatagram = 2048;

  // nullptr with `error` if the epoll instance cannot be created.
  static MediaPump* create(uv_loop_t* loop, std::string& error);
  // Stops watching and frees the pump once libuv has let go of its handle.
  // Every socket must have been closed before.
  void close();

  uv_loop_t* loop() const { return loop_; }

  // Registration of a socket's descriptor (MediaSocket only). 0 or -errno.
  int watch(int fd, MediaSocket* s);
  void unwatch(int fd);
  // Frees `s` now, or at the end of the current pass if one is running.
  void retire(MediaSocket* s);

  // Idle sockets: a socket its stream closed stays bound and registered
  // (its datagrams are read and discarded) so that the next stream on that
  // port costs no socket, bind, epoll or close call. park() keeps `s` unless
  // `idle_capacity` sockets are idle already; unpark() takes the idle
  // socket of `local` back, or returns nullptr.
  void set_idle_capacity(size_t n) { idle_capacity_ = n; }
  bool park(MediaSocket* s);
  MediaSocket* unpark(const IpEndpoint& local);
  size_t idle_count() const { return idle_.size(); }
  // Closes up to `n` idle sockets (any ports): a new port's socket() failed
  // for want of descriptors, which parked sockets must never cause. Returns
  // how many it closed.
  size_t evict_idle(size_t n);
  // Live upgrade (app/upgrade.h). The old process closes its idle sockets
  // (close_idle) and hands the others over; the new one is given their
  // descriptors by local address (inherit), MediaSocket::open() takes one
  // instead of binding (take_inherited: -1 if none), and the ones no
  // restored stream took are closed (close_inherited, returns how many).
  void close_idle();
  // Runs `fn(arg)` when a pass ends (the relay commits the kernel
  // hand-overs the pass asked for).
  void set_pass_end(void (*fn)(void*), void* arg) {
    pass_end_ = fn;
    pass_end_arg_ = arg;
  }
  void inherit(const IpEndpoint& local, int fd);
  int take_inherited(const IpEndpoint& local);
  size_t close_inherited();

  // Queues one datagram for sending from `fd` to `to`. The data must stay
  // valid until the queue is flushed, which happens before the pass reads
  // again. Outside a pass it is sent at once.
  void send(int fd, const SocketAddress& to, const uint8_t* data, size_t len, SendFailureSink* sink,
            int cookie);

  // Counters of the whole data path.
  uint64_t received() const { return received_; }
  uint64_t send_failures() const { return send_failures_; }
  uint64_t passes() const { return passes_; }

 private:
  MediaPump() = default;
  static void on_ready(uv_poll_t* p, int status, int events);
  static void on_closed(uv_handle_t* h);
  void run_pass();
  // Reads one batch from `s` and hands each datagram to its owner.
  unsigned read_batch(MediaSocket* s);
  void flush();

  struct Outgoing {
    int fd;
    SocketAddress to;
    const uint8_t* data;
    size_t len;
    SendFailureSink* sink;
    int cookie;
  };

  uv_loop_t* loop_ = nullptr;
  uv_poll_t poll_;
  int epfd_ = -1;
  bool in_pass_ = false;
  bool gso_ = true;  // UDP_SEGMENT sends; off after the kernel refused one
  std::vector<MediaSocket*> graveyard_;
  std::unordered_map<uint64_t, MediaSocket*> idle_;  // by address << 16 | port
  std::unordered_map<uint64_t, int> inherited_;      // likewise
  void (*pass_end_)(void*) = nullptr;
  void* pass_end_arg_ = nullptr;
  size_t idle_capacity_ = 0;
  Outgoing out_[kBatch + 8];  // one batch plus the STUN queue's slots
  unsigned out_count_ = 0;
  uint64_t received_ = 0;
  uint64_t send_failures_ = 0;
  uint64_t passes_ = 0;
};

}  // namespace mp::relay
