// The relay's userspace data path: every media socket of a relay, read and
// written in bounded passes.
//
// All media sockets are registered (level-triggered) in one epoll instance
// of their own, and that epoll descriptor is the only thing the libuv loop
// watches for media. When it is readable, one *pass* runs: rounds of
// epoll_wait() for up to kEvents ready sockets, the datagrams waiting on
// them read, the owners' forwarding decisions queued as outgoing datagrams,
// and the queue flushed before the buffers are read into again. A pass
// stops after kPassBudget datagrams, or when a round found fewer than
// kEvents sockets ready, and the loop turns before the next one, so control
// sockets and timers are served at least every few milliseconds however hot
// the media path is. Level-triggered epoll hands out ready sockets
// round-robin, so one hot stream cannot starve the others.
//
// Two ways to read and write (use_batched_io): with io_uring (batched_io.h)
// a round's receives from every ready socket go to the kernel in one system
// call, and its sends in another, whatever the number of sockets; without
// it, one recvmmsg() per ready socket and one sendmmsg() per socket the
// datagrams leave by. Real RTP puts one datagram at a time on each socket,
// so the second way pays two system calls per packet. A socket whose reads
// keep finding all they asked for (a hot stream, a backlog) is given more
// receives per round, up to kBatch, as recvmmsg() would read. A round with one ready
// socket, and sends that all leave by one socket, use recvmmsg()/sendmmsg()
// even with io_uring: one call either way, and the plain one is cheaper.
// Datagrams that go alone can instead all leave through a raw socket per IP
// version (use_raw_send, raw_udp_sender.h): one sendmmsg() for a pass's
// datagrams of every stream, without the per-socket wake-ups of UDP
// sockets' sends.
//
// Coalescing (set_coalesce, [Relay] media_coalesce): woken by every
// datagram, a relay below its capacity spends most of its time going to
// sleep and waking up (a pass finds one or two datagrams). With a period
// set, a pass that found work but not its budget's worth stops the watch on
// the epoll descriptor and the next passes run on a timer of that period
// (pass_timer.h), each taking what arrived meanwhile; a pass that finds
// nothing goes back to waiting for readiness, one that fills its budget
// too (the relay is behind: passes run back to back). The first datagram
// after a quiet spell is forwarded at once, later ones wait at most one
// period.
//
// Receiving through one socket per IP family (add_tproxy_socket, [Relay]
// media_receive, tproxy_socket.h): an nftables rule steers the datagrams of
// every media port to that socket, so a round's epoll_wait() usually names
// it alone and it is drained with recvmmsg(), kTproxyBatch datagrams per
// call, whatever the number of streams; each datagram's original
// destination port names its socket (a flat table per family, kept by
// watch() and unwatch()), whose owner gets it as if that socket had read
// it. The per-port sockets stay registered: what still reaches them
// (fragments, a rule removed) is read as before. They are transparent
// (set_ports_transparent), the rule's sign that a port is the relay's.
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
#include <utility>
#include <vector>

namespace mp::relay {

class BatchedIo;
class MediaSocket;
class PassTimer;
class RawUdpSender;

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
  // Receives queued per round with batched I/O, all sockets together.
  static constexpr unsigned kRoundReads = 256;
  // Receives per socket at least when a round finds kEvents ready sockets.
  static constexpr unsigned kBehindReads = kRoundReads / kEvents;
  // Datagrams per recvmmsg() on a tproxy socket.
  static constexpr unsigned kTproxyBatch = 64;

  // nullptr with `error` if the epoll instance cannot be created.
  static MediaPump* create(uv_loop_t* loop, std::string& error);
  // Reads and writes through io_uring from now on (see above). False with
  // the reason when io_uring cannot be used; the pump then goes on with
  // recvmmsg()/sendmmsg().
  bool use_batched_io(std::string& error);
  bool batched_io() const { return batched_ != nullptr; }
  // Sends the datagrams of a pass through a raw socket per IP version
  // (raw_udp_sender.h). False with the reason when no raw socket can be
  // opened (no CAP_NET_RAW); the pump then sends through each port's socket.
  bool use_raw_send(std::string& error);
  bool raw_send() const { return raw_ != nullptr; }
  // Runs passes on a timer of `period_ns` while datagrams keep coming (see
  // above); 0 turns it off. False with the reason if no timer can be made.
  bool set_coalesce(uint64_t period_ns, std::string& error);
  // Whether passes currently run on the timer (tests).
  bool coalescing() const;

  // Stops watching and frees the pump once libuv has let go of its handle.
  // Every socket must have been closed before.
  void close();

  uv_loop_t* loop() const { return loop_; }

  // Registration of a socket's descriptor (MediaSocket only). 0 or -errno.
  int watch(int fd, MediaSocket* s);
  void unwatch(MediaSocket* s);

  // Reads `fd`, a tproxy socket of `local`'s family bound at `local`
  // (tproxy_socket.h), from now on; the pump closes it. One per family.
  // False with the reason if it cannot be watched.
  bool add_tproxy_socket(int fd, const IpEndpoint& local, std::string& error);
  // Live upgrade: stops reading the tproxy sockets and returns them (local
  // address and descriptor) for the successor; they are closed with the
  // pump.
  std::vector<std::pair<IpEndpoint, int>> release_tproxy_sockets();
  size_t tproxy_sockets() const;
  // With `on`, makes every port socket watched now transparent, so that
  // the tproxy rule steers their datagrams (tproxy_socket.h), and tells
  // MediaSocket::open() to make new ones so; false with the reason (and all
  // plain again) if the kernel refused one. Off: all plain.
  bool set_ports_transparent(bool on, std::string& error);
  bool ports_transparent() const { return transparent_ports_; }
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
  // `from` is the socket's local address (the raw path's source); it must
  // stay valid until the flush, as a socket's address does.
  void send(int fd, const IpEndpoint* from, const SocketAddress& to, const uint8_t* data,
            size_t len, SendFailureSink* sink, int cookie);

  // Counters of the whole data path.
  uint64_t received() const { return received_; }
  uint64_t send_failures() const { return send_failures_; }
  uint64_t passes() const { return passes_; }
  // Datagrams read from the tproxy sockets, and those of them for a port no
  // stream has (dropped).
  uint64_t tproxy_received() const { return tproxy_received_; }
  uint64_t tproxy_unclaimed() const { return tproxy_unclaimed_; }

 private:
  MediaPump() = default;
  ~MediaPump();
  static void on_ready(uv_poll_t* p, int status, int events);
  static void on_tick(void* pump);
  static void on_closed(uv_handle_t* h);
  // Reads and forwards for one pass; returns the datagrams handled.
  unsigned run_pass();
  // Reads one batch from `s` and hands each datagram to its owner.
  unsigned read_batch(MediaSocket* s);
  struct TproxySocket {
    int fd = -1;
    IpEndpoint local;
    bool watched = false;
  };
  // Reads the tproxy sockets among the `n` ready events of g_events, at most
  // `budget` datagrams, and removes them from the list; returns the
  // datagrams read and sets `n` to the events left.
  unsigned read_tproxy_events(int& n, unsigned budget);
  // Drains `t` (up to `budget` datagrams) and hands each datagram to the
  // owner of the port it was sent to.
  unsigned read_tproxy(TproxySocket& t, unsigned budget);
  // Reads the `n` ready sockets of g_events through io_uring, at most
  // `budget` datagrams.
  unsigned read_ready_batched(int n, unsigned budget);
  void flush();
  void send_batched(unsigned messages);
  void send_each_socket(unsigned messages);
  void send_failed(unsigned message, int err);
  // The end of the GSO run out_[j] starts (j + 1: it goes alone).
  unsigned run_end(unsigned j) const;
  // Queues out_[j] on the raw path if it suits; false if not.
  bool queue_raw(unsigned j);
  void send_raw();
  static void raw_failed(unsigned message, int err, void* pump);
  void stop_batched_io(int err);

  struct Outgoing {
    int fd;
    const IpEndpoint* from;
    SocketAddress to;
    const uint8_t* data;
    size_t len;
    SendFailureSink* sink;
    int cookie;
  };

  uv_loop_t* loop_ = nullptr;
  uv_poll_t poll_;
  int epfd_ = -1;
  PassTimer* tick_ = nullptr;  // coalescing's timer (set_coalesce)
  uint64_t coalesce_ns_ = 0;
  bool in_pass_ = false;
  bool gso_ = true;  // UDP_SEGMENT sends; off after the kernel refused one
  std::vector<MediaSocket*> graveyard_;
  std::unordered_map<uint64_t, MediaSocket*> idle_;  // by address << 16 | port
  std::unordered_map<uint64_t, int> inherited_;      // likewise
  TproxySocket tproxy_[2];                           // IPv4, IPv6
  unsigned tproxy_watched_ = 0;
  bool transparent_ports_ = false;        // set_ports_transparent(true)
  std::vector<MediaSocket*> by_port_[2];  // watched sockets by local port, per family
  void (*pass_end_)(void*) = nullptr;
  void* pass_end_arg_ = nullptr;
  size_t idle_capacity_ = 0;
  std::unique_ptr<BatchedIo> batched_;
  std::unique_ptr<RawUdpSender> raw_;
  unsigned raw_count_[2] = {0, 0};  // queued raw messages, IPv4 and IPv6
  unsigned raw_sending_v6_ = 0;     // the version send_raw() is sending
  Outgoing out_[kRoundReads + 8];   // one round plus the STUN queue's slots
  unsigned out_count_ = 0;
  uint64_t received_ = 0;
  uint64_t send_failures_ = 0;
  uint64_t passes_ = 0;
  uint64_t tproxy_received_ = 0;
  uint64_t tproxy_unclaimed_ = 0;
};

}  // namespace mp::relay
