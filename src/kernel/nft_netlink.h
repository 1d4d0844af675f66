// Netlink transport of the nftables forwarder (private to src/kernel/).
//
// Owns the NETLINK_NETFILTER socket and the three ways the forwarder talks to
// nf_tables over it: batches (one nfnetlink transaction; every message asks for
// an ACK and the kernel answers all of them before sendto() returns), requests
// answered by data messages and an ACK (GETSETELEM for given keys, GETTABLE),
// and dumps ended by NLMSG_DONE. Everything is synchronous and bounded by a
// receive timeout, so no call can hang; answers are matched by sequence number
// and stale ones (left by an earlier timed-out call) are dropped. Errors are
// positive errno values here; describe_errno() turns them into words an
// operator can act on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct nlmsghdr;
struct mnl_socket;

namespace mp::kernel::detail {

// Receive timeout of every call: the kernel answers netlink requests
// synchronously, so this only guards against the impossible.
constexpr int kReceiveTimeoutMs = 3000;

// The forwarder's table lives in the netdev family (ingress hook).
constexpr uint16_t kTableFamily = 5;  // NFPROTO_NETDEV

// Messages of one nfnetlink batch: BATCH_BEGIN, nf_tables messages (family netdev,
// each with NLM_F_ACK), BATCH_END. The buffer never reallocates, so a header
// returned by add() stays valid while its attributes are appended.
class Batch {
 public:
  // Largest single message add() leaves room for (libnftnl and libmnl append
  // attributes without bounds checks, so room is reserved up front).
  static constexpr size_t kMaxMessage = 64 * 1024;

  Batch();
  // Empties the buffer and writes BATCH_BEGIN with sequence number `seq`.
  void begin(uint32_t seq);
  // Starts an nf_tables message of type `nft_type` (NFT_MSG_*) with `flags`
  // (NLM_F_ACK is added); the caller appends attributes, then calls close().
  // nullptr if the buffer has no room for another message.
  // `family`: NFPROTO_* of the message's table (the forwarder's: netdev).
  nlmsghdr* add(uint16_t nft_type, uint16_t flags, uint16_t family = kTableFamily);
  void close(nlmsghdr* nlh);
  // Writes BATCH_END. false if the buffer is full.
  bool end();

  const char* data() const { return buf_.data(); }
  size_t size() const { return used_; }
  uint32_t first_seq() const { return first_seq_; }
  uint32_t next_seq() const { return next_seq_; }
  size_t messages() const { return types_.size(); }
  // NFT_MSG_* type of the message with sequence number `seq` (0 if none).
  uint16_t type_of(uint32_t seq) const;

 private:
  std::vector<char> buf_;
  size_t used_ = 0;
  uint32_t first_seq_ = 0;
  uint32_t next_seq_ = 0;
  std::vector<uint16_t> types_;  // index: seq - first_seq_ - 1
};

// Outcome of a batch the kernel refused (the whole transaction is aborted).
struct BatchError {
  int err = 0;            // errno of the first error
  uint16_t msg_type = 0;  // NFT_MSG_* of the message it was reported for, 0 = the batch
};

class Netlink {
 public:
  Netlink() = default;
  ~Netlink();
  Netlink(const Netlink&) = delete;
  Netlink& operator=(const Netlink&) = delete;

  // Opens and binds the socket in the caller's network namespace. 0 or errno.
  int open();
  bool is_open() const { return nl_ != nullptr; }
  uint32_t take_seq() { return seq_++; }
  // Sequence number for the next batch, which uses every number up to
  // Batch::next_seq(); call done_seq() with that afterwards.
  uint32_t peek_seq() const { return seq_; }
  void done_seq(uint32_t next) { seq_ = next; }
  // Bytes the kernel may queue for us before dropping answers (SO_RCVBUF).
  size_t receive_buffer() const { return rcvbuf_; }

  // Sends `batch` in one sendto() and collects the ACK of every message.
  // 0 when the transaction was committed; otherwise errno, with details in
  // `error`.
  int send_batch(const Batch& batch, BatchError& error);
  // One transaction: begins `batch`, lets `fill` append its messages (false:
  // no room), ends it and sends it. 0, EMSGSIZE, or send_batch()'s errno.
  int transact(Batch& batch, const std::function<bool(Batch&)>& fill, BatchError& error);

  // Sends one request (seq must come from take_seq()) and calls `on_data` for
  // every data message answering it, until the ACK or NLMSG_DONE. 0 or errno;
  // EINTR if the kernel flagged a dump as interrupted (retry it).
  int request(const nlmsghdr* req, const std::function<void(const nlmsghdr*)>& on_data);

 private:
  // Receives one datagram into rx_; returns its length, or -errno.
  long receive(bool wait);

  mnl_socket* nl_ = nullptr;
  uint32_t portid_ = 0;
  uint32_t seq_ = 1;
  size_t rcvbuf_ = 0;
  std::vector<char> rx_;
};

// Words for an errno returned by nf_tables while doing `what`, for operators.
std::string describe_errno(int err, const std::string& what);

}  // namespace mp::kernel::detail
