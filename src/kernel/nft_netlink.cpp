// Implementation of the forwarder's netlink transport (nft_netlink.h).
#include "kernel/nft_netlink.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>
#include <ctime>

namespace mp::kernel::detail {

namespace {

constexpr size_t kBatchCapacity = 512 * 1024;
// Our largest answers are dump messages (at most 32 KiB each); a datagram
// that does not fit is reported as truncated instead of being misparsed.
constexpr size_t kReceiveBuffer = 128 * 1024;
// Socket receive buffer asked for: GETSETELEM answers one message per element,
// each accounted at about 4 KiB of socket memory.
constexpr int kSocketReceiveBuffer = 4 * 1024 * 1024;

}  // namespace

Batch::Batch() : buf_(kBatchCapacity) {}

void Batch::begin(uint32_t seq) {
  used_ = 0;
  types_.clear();
  first_seq_ = seq;
  next_seq_ = seq + 1;
  nlmsghdr* nlh = nftnl_batch_begin(buf_.data(), seq);
  used_ += NLMSG_ALIGN(nlh->nlmsg_len);
}

nlmsghdr* Batch::add(uint16_t nft_type, uint16_t flags, uint16_t family) {
  // Room for this message plus BATCH_END.
  if (buf_.size() - used_ < kMaxMessage + 64) return nullptr;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf_.data() + used_, nft_type, family,
                                        static_cast<uint16_t>(flags | NLM_F_ACK), next_seq_++);
  types_.push_back(nft_type);
  return nlh;
}

void Batch::close(nlmsghdr* nlh) {
  used_ += NLMSG_ALIGN(nlh->nlmsg_len);
}

bool Batch::end() {
  if (buf_.size() - used_ < 64) return false;
  nlmsghdr* nlh = nftnl_batch_end(buf_.data() + used_, next_seq_++);
  used_ += NLMSG_ALIGN(nlh->nlmsg_len);
  return true;
}

uint16_t Batch::type_of(uint32_t seq) const {
  if (seq <= first_seq_) return 0;
  size_t i = seq - first_seq_ - 1;
  return i < types_.size() ? types_[i] : 0;
}

Netlink::~Netlink() {
  if (nl_) mnl_socket_close(nl_);
}

int Netlink::open() {
  nl_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (!nl_) return errno;
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    int err = errno;
    mnl_socket_close(nl_);
    nl_ = nullptr;
    return err;
  }
  portid_ = mnl_socket_get_portid(nl_);
  int fd = mnl_socket_get_fd(nl_);
  // Errors do not echo the (possibly large) request back.
  int one = 1;
  mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &one, sizeof one);
  timeval tv{kReceiveTimeoutMs / 1000, (kReceiveTimeoutMs % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  // SO_RCVBUFFORCE needs CAP_NET_ADMIN, which nf_tables needs anyway; without
  // it SO_RCVBUF is capped by net.core.rmem_max.
  int want = kSocketReceiveBuffer;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  int got = 0;
  socklen_t len = sizeof got;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got > 0)
    rcvbuf_ = static_cast<size_t>(got);
  rx_.resize(kReceiveBuffer);
  // Sequence numbers start somewhere unlikely to match a previous socket's.
  seq_ = static_cast<uint32_t>(time(nullptr));
  if (seq_ == 0) seq_ = 1;
  return 0;
}

long Netlink::receive(bool wait) {
  for (;;) {
    ssize_t n =
        recv(mnl_socket_get_fd(nl_), rx_.data(), rx_.size(), MSG_TRUNC | (wait ? 0 : MSG_DONTWAIT));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return wait ? -ETIMEDOUT : -EAGAIN;
      return -errno;
    }
    if (static_cast<size_t>(n) > rx_.size()) return -EMSGSIZE;
    return n;
  }
}

int Netlink::send_batch(const Batch& batch, BatchError& error) {
  error = BatchError{};
  if (!nl_) return error.err = EBADF;
  if (mnl_socket_sendto(nl_, batch.data(), batch.size()) < 0) return error.err = errno;
  const uint32_t lo = batch.first_seq();
  const uint32_t hi = batch.next_seq();  // exclusive
  size_t expected = batch.messages();
  size_t answered = 0;
  // The kernel processes a batch inside sendto() and queues every answer
  // before returning. Wait (bounded) only while answers are missing and
  // nothing went wrong; after an error, collect what is queued and stop.
  while (answered < expected) {
    long n = receive(error.err == 0);
    if (n == -EAGAIN) break;
    if (n < 0) {
      if (error.err == 0) error.err = static_cast<int>(-n);
      break;
    }
    int len = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx_.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_seq < lo || nlh->nlmsg_seq >= hi || nlh->nlmsg_type != NLMSG_ERROR) continue;
      if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) continue;
      const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      if (nlh->nlmsg_seq != lo) ++answered;
      if (e->error != 0 && error.err == 0) {
        error.err = -e->error;
        error.msg_type = batch.type_of(nlh->nlmsg_seq);
      }
    }
  }
  return error.err;
}

int Netlink::request(const nlmsghdr* req, const std::function<void(const nlmsghdr*)>& on_data) {
  if (!nl_) return EBADF;
  if (mnl_socket_sendto(nl_, req, req->nlmsg_len) < 0) return errno;
  const uint32_t seq = req->nlmsg_seq;
  bool interrupted = false;
  for (;;) {
    long n = receive(true);
    if (n < 0) return static_cast<int>(-n);
    int len = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(rx_.data()); mnl_nlmsg_ok(nlh, len);
         nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_seq != seq || nlh->nlmsg_pid != portid_) continue;
      if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
      if (nlh->nlmsg_type == NLMSG_ERROR) {
        if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return EPROTO;
        const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        if (e->error != 0) return -e->error;
        return interrupted ? EINTR : 0;
      }
      if (nlh->nlmsg_type == NLMSG_DONE) {
        int status = 0;
        if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int))
          std::memcpy(&status, mnl_nlmsg_get_payload(nlh), sizeof status);
        if (status < 0) return -status;
        return interrupted ? EINTR : 0;
      }
      if (nlh->nlmsg_type < NLMSG_MIN_TYPE) continue;  // NOOP, OVERRUN
      on_data(nlh);
    }
  }
}

int Netlink::transact(Batch& batch, const std::function<bool(Batch&)>& fill, BatchError& error) {
  batch.begin(seq_);
  if (!fill(batch) || !batch.end()) return EMSGSIZE;
  seq_ = batch.next_seq();
  return send_batch(batch, error);
}

std::string describe_errno(int err, const std::string& what) {
  std::string text = what + ": " + std::strerror(err);
  switch (err) {
    case EPERM:
    case EACCES:
      text +=
          " (nf_tables needs CAP_NET_ADMIN in this network namespace: run mediaproxy as root or "
          "grant the capability, e.g. AmbientCapabilities=CAP_NET_ADMIN in its systemd unit; "
          "or set forwarding = userspace)";
      break;
    case EPROTONOSUPPORT:
      text +=
          " (netlink netfilter is not available in this kernel: needs CONFIG_NETFILTER_NETLINK "
          "and CONFIG_NF_TABLES; or set forwarding = userspace)";
      break;
    case EAFNOSUPPORT:
    case EOPNOTSUPP:
      text +=
          " (nf_tables not available in this kernel: needs CONFIG_NF_TABLES and "
          "CONFIG_NF_TABLES_IPV4; or set forwarding = userspace)";
      break;
    case ETIMEDOUT:
      text +=
          " (no answer from the kernel within " + std::to_string(kReceiveTimeoutMs / 1000) + " s)";
      break;
    case ENOBUFS:
      text += " (netlink answers were dropped: the socket receive buffer overflowed)";
      break;
    case EMSGSIZE:
      text += " (netlink batch too large)";
      break;
    case ENOMEM:
    case ENOSPC:
    case ENFILE:
      text += " (the kernel ran out of memory for nftables elements)";
      break;
    default:
      break;
  }
  return text;
}

}  // namespace mp::kernel::detail
