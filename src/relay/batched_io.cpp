// Implementation of batched socket I/O over io_uring (batched_io.h).
#include "relay/batched_io.h"

#include <cerrno>
#include <cstring>

#if MEDIAPROXY_HAVE_LIBURING
#include <liburing.h>
#endif

namespace mp::relay {

#if MEDIAPROXY_HAVE_LIBURING

struct BatchedIo::Ring {
  io_uring ring{};
  bool live = false;
  ~Ring() {
    if (live) io_uring_queue_exit(&ring);
  }
};

namespace {
// One thread submits and nothing needs the kernel to interrupt it for
// completions: the cheapest set-up a kernel takes (6.0 and later), then
// plainer ones for older kernels.
int init_ring(io_uring* ring, unsigned entries) {
  const unsigned flag_sets[] = {
#ifdef IORING_SETUP_SINGLE_ISSUER
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
#endif
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
      0,
  };
  int rc = -EINVAL;
  for (unsigned flags : flag_sets) {
    io_uring_params p{};
    p.flags = flags;
    rc = io_uring_queue_init_params(entries, ring, &p);
    if (rc != -EINVAL) break;
  }
  return rc;
}
}  // namespace

std::unique_ptr<BatchedIo> BatchedIo::create(unsigned entries, std::string& error) {
  auto ring = std::make_unique<Ring>();
  int rc = init_ring(&ring->ring, entries);
  if (rc < 0) {
    error = std::string("io_uring unavailable: ") + std::strerror(-rc);
    return nullptr;
  }
  ring->live = true;
  return std::unique_ptr<BatchedIo>(new BatchedIo(std::move(ring), entries));
}

// The next free submission entry, tagged, or nullptr when `entries_` are
// queued already.
static io_uring_sqe* next_entry(io_uring* ring, unsigned& queued, unsigned entries) {
  if (queued >= entries) return nullptr;
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe) ++queued;
  return sqe;
}

bool BatchedIo::recv(int fd, msghdr* msg, uint32_t tag) {
  io_uring_sqe* sqe = next_entry(&ring_->ring, queued_, entries_);
  if (!sqe) return false;
  // MSG_TRUNC: the result is the datagram's real length, so a datagram
  // larger than the buffer is recognised without reading msg_flags back.
  io_uring_prep_recvmsg(sqe, fd, msg, MSG_DONTWAIT | MSG_TRUNC);
  io_uring_sqe_set_data64(sqe, tag);
  return true;
}

bool BatchedIo::send(int fd, const msghdr* msg, uint32_t tag) {
  io_uring_sqe* sqe = next_entry(&ring_->ring, queued_, entries_);
  if (!sqe) return false;
  io_uring_prep_sendmsg(sqe, fd, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, tag);
  return true;
}

int BatchedIo::complete(Completion* out) {
  if (queued_ == 0) return 0;
  const unsigned want = queued_;
  int rc;
  do {
    rc = io_uring_submit_and_wait(&ring_->ring, want);
  } while (rc == -EINTR);
  if (rc < 0) {
    // Nothing was taken, and the entries stay in the submission queue
    // (liburing has no way to take them back): the caller stops using the
    // ring (MediaPump::stop_batched_io).
    queued_ = 0;
    return rc;
  }
  unsigned got = 0;
  while (got < want) {
    io_uring_cqe* cqe = nullptr;
    int w = io_uring_wait_cqe(&ring_->ring, &cqe);
    if (w == -EINTR) continue;
    if (w < 0) break;
    out[got].tag = static_cast<uint32_t>(io_uring_cqe_get_data64(cqe));
    out[got].result = cqe->res;
    ++got;
    io_uring_cqe_seen(&ring_->ring, cqe);
  }
  queued_ = 0;
  return static_cast<int>(got);
}

BatchedIo::BatchedIo(std::unique_ptr<Ring> ring, unsigned entries)
    : ring_(std::move(ring)), entries_(entries) {}

#else  // built without liburing

struct BatchedIo::Ring {};

std::unique_ptr<BatchedIo> BatchedIo::create(unsigned, std::string& error) {
  error = "io_uring unavailable: built without liburing";
  return nullptr;
}
bool BatchedIo::recv(int, msghdr*, uint32_t) {
  return false;
}
bool BatchedIo::send(int, const msghdr*, uint32_t) {
  return false;
}
int BatchedIo::complete(Completion*) {
  return -ENOSYS;
}
BatchedIo::BatchedIo(std::unique_ptr<Ring> ring, unsigned entries)
    : ring_(std::move(ring)), entries_(entries) {}

#endif

BatchedIo::~BatchedIo() = default;

}  // namespace mp::relay
