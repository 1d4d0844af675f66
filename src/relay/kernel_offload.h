// The relay's one owner of moving stream legs into and out of the kernel.
//
// Streams only say "ready" (want(): both parties of a sub-stream latched and
// enough media seen) or "take it back" (take_back(): the stream closes, a
// party moved or rebound). Hand-overs are queued on the packet path without
// allocating or talking to the kernel, and committed together once per media
// pass (commit_pending(), called by the pump when a pass ends): a thousand
// calls answered in the same second cost one netlink transaction per pass,
// not one round trip each inside the pass. Take-backs are synchronous,
// because the stream's final counters are reported right after; several in a
// row (a session ending) can be grouped with a Batch. The id <-> leg map
// lives here and nowhere else (a leg keeps only its rule id), and the kernel
// backend (kernel/nft_forwarder.h) is named only by kernel_offload.cpp and
// relay_engine.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/address.h"

namespace mp::kernel {
class NftForwarder;
}

namespace mp::relay {

class MediaStream;

class KernelOffload {
 public:
  // `max_streams` bounds the queue of hand-overs (reserved once).
  KernelOffload(std::unique_ptr<kernel::NftForwarder> forwarder, size_t max_streams);
  ~KernelOffload();
  KernelOffload(const KernelOffload&) = delete;
  KernelOffload& operator=(const KernelOffload&) = delete;

  kernel::NftForwarder& forwarder() { return *forwarder_; }

  // Packet path: sub-stream `sub` of `st` is ready for the kernel. Queued
  // (once) until the end of the current media pass.
  void want(MediaStream* st, int sub);
  // Every queued hand-over whose stream is still ready, in one transaction.
  void commit_pending();
  // A stream about to be destroyed leaves the queue.
  void forget(MediaStream* st);

  // Takes sub-stream `sub` of `st` out of the kernel now; the rules' final
  // counters are added to the legs.
  void take_back(MediaStream* st, int sub);

  // After a restart: leg (`sub`, `side`) of `st` takes over rule `id`,
  // which has counted `packets`/`bytes` so far.
  void adopt(uint32_t id, MediaStream* st, int sub, int side, uint64_t packets, uint64_t bytes);

  // One dump of the kernel's counters into the legs. false with `error`.
  bool read_counters(std::string& error);

  size_t rule_count() const { return rules_.size(); }
  uint64_t batches() const { return batches_; }          // transactions of commit_pending()
  uint64_t handed_over() const { return handed_over_; }  // sub-streams they carried

 private:
  struct Ref {
    MediaStream* stream = nullptr;
    int sub = 0;
    int side = 0;
  };
  struct Handover {
    MediaStream* stream;
    int sub;
    uint32_t ids[2];
  };

  std::unique_ptr<kernel::NftForwarder> forwarder_;
  std::unordered_map<uint32_t, Ref> rules_;  // the id <-> leg map
  std::vector<std::pair<MediaStream*, int>> pending_;
  std::vector<Handover> batch_;  // reused by commit_pending()
  uint64_t batches_ = 0;
  uint64_t handed_over_ = 0;
};

}  // namespace mp::relay
