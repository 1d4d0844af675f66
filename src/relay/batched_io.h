// Batched socket I/O: many sockets' recvmsg() and sendmsg() in one system
// call, through io_uring.
//
// On the machines a relay runs on a system call costs about a microsecond
// before it does any work (page-table isolation and retpolines in a VM), and
// the media pump makes two per forwarded RTP packet when it goes socket by
// socket: a receive on the socket the packet arrived on and a send on the
// one it leaves by (real RTP is one datagram per stream every 20 ms, so a
// socket seldom has more than one waiting). BatchedIo queues the receives of
// every ready socket, or the sends of a whole pass, and submits them with one
// io_uring_enter(). Every operation is non-blocking (MSG_DONTWAIT): it
// completes during the submission, so complete() never sleeps, and the
// buffers are free again when it returns.
//
// Where io_uring is missing (built without liburing, old kernel, the
// kernel.io_uring_disabled sysctl, a seccomp filter) create() fails with the
// reason and the pump keeps its recvmmsg()/sendmmsg() path.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

namespace mp::relay {

class BatchedIo {
 public:
  struct Completion {
    uint32_t tag;  // as queued
    int result;    // bytes, or -errno
  };

  // A ring for up to `entries` operations per submission; nullptr with the
  // reason in `error` when io_uring cannot be used here.
  static std::unique_ptr<BatchedIo> create(unsigned entries, std::string& error);
  ~BatchedIo();
  BatchedIo(const BatchedIo&) = delete;
  BatchedIo& operator=(const BatchedIo&) = delete;

  // Queue one operation; `msg` and what it points to must stay valid until
  // complete() returns. False when `entries` are queued already.
  bool recv(int fd, msghdr* msg, uint32_t tag);
  bool send(int fd, const msghdr* msg, uint32_t tag);
  unsigned queued() const { return queued_; }

  // Submits what is queued and collects one completion per operation into
  // `out` (room for queued()), in no particular order. Returns how many, or
  // -errno if the submission itself failed: nothing was done, and the ring
  // must not be used again (the entries are still queued in it).
  int complete(Completion* out);

 private:
  struct Ring;
  explicit BatchedIo(std::unique_ptr<Ring> ring, unsigned entries);
  std::unique_ptr<Ring> ring_;
  unsigned entries_ = 0;
  unsigned queued_ = 0;
};

}  // namespace mp::relay
