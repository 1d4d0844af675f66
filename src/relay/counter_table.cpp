// The memory-mapped stream counter table (counter_table.h).
#include "relay/counter_table.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace mp::relay {

namespace {

constexpr char kMagic[] = "mediaproxy-counters-1";
constexpr size_t kHeaderSize = 512;

struct Header {
  char magic[24];
  char identity[256];
  double clock_offset;
  uint32_t slots;
};
static_assert(sizeof(Header) <= kHeaderSize);

}  // namespace

CounterTable::~CounterTable() {
  close();
}

bool CounterTable::open(const std::string& path, const std::string& identity, uint32_t slots,
                        double clock_offset, std::string& error) {
  close();
  if (identity.size() >= sizeof(Header::identity) || slots == 0) {
    error = "counter table: bad parameters";
    return false;
  }
  const size_t size = kHeaderSize + static_cast<size_t>(slots) * sizeof(CounterSlot);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  bool keep = ::fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) == size;
  if (!keep && (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0)) {
    error = "cannot size " + path + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    error = "cannot map " + path + ": " + std::strerror(errno);
    return false;
  }
  auto* h = static_cast<Header*>(map);
  keep = keep && std::memcmp(h->magic, kMagic, sizeof kMagic) == 0 &&
         std::strncmp(h->identity, identity.c_str(), sizeof h->identity) == 0 && h->slots == slots;
  if (!keep) std::memset(map, 0, size);
  previous_offset_ = keep ? h->clock_offset : 0;
  std::memcpy(h->magic, kMagic, sizeof kMagic);
  std::memset(h->identity, 0, sizeof h->identity);
  std::memcpy(h->identity, identity.data(), identity.size());
  h->clock_offset = clock_offset;
  h->slots = slots;
  path_ = path;
  map_ = map;
  map_size_ = size;
  slots_ = reinterpret_cast<CounterSlot*>(static_cast<char*>(map) + kHeaderSize);
  count_ = slots;
  claimed_.assign(slots, false);
  free_.clear();
  return true;
}

CounterSlot* CounterTable::find(uint32_t index, uint64_t owner) {
  if (!slots_ || index >= count_ || owner == 0 || claimed_[index]) return nullptr;
  return slots_[index].owner == owner ? &slots_[index] : nullptr;
}

void CounterTable::claim(uint32_t index) {
  if (index < count_) claimed_[index] = true;
}

void CounterTable::release_unclaimed() {
  if (!slots_) return;
  free_.clear();
  free_.reserve(count_);
  for (uint32_t i = count_; i-- > 0;) {
    if (claimed_[i]) continue;
    std::memset(&slots_[i], 0, sizeof(CounterSlot));
    free_.push_back(i);  // lowest index handed out first
  }
}

uint32_t CounterTable::acquire(uint64_t owner) {
  if (!slots_ || free_.empty()) return kNone;
  const uint32_t i = free_.back();
  free_.pop_back();
  std::memset(&slots_[i], 0, sizeof(CounterSlot));
  slots_[i].owner = owner;
  claimed_[i] = true;
  return i;
}

void CounterTable::release(uint32_t index) {
  if (!slots_ || index >= count_ || !claimed_[index]) return;
  slots_[index].owner = 0;
  claimed_[index] = false;
  free_.push_back(index);  // capacity reserved in release_unclaimed()
}

void CounterTable::close() {
  if (map_) ::munmap(map_, map_size_);
  map_ = nullptr;
  slots_ = nullptr;
  count_ = 0;
}

void CounterTable::remove_file() {
  close();
  if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace mp::relay
