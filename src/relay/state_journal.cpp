// The relay's state file (state_journal.h): line format, reader and writer.
//
// The writer never fsyncs: the file lives in the runtime directory (tmpfs on
// a systemd host), which survives the process but not the host, and so do
// the kernel rules it describes. A process killed in the middle of a write
// leaves at most a last line without its newline; that line fails its
// checksum and the reader refuses the file, as for any other damage.
#include "relay/state_journal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>

namespace mp::relay {

namespace {

constexpr const char* kMagic = "mediaproxy-relay-state";
constexpr int kVersion = 1;
constexpr size_t kMaxFileBytes = size_t{1} << 30;

// The line checksum: FNV-1a over 8-byte words (then the tail bytes), folded
// to 32 bits. It catches damage, not attacks; a record is written at every
// state change, so it is eight times cheaper than FNV-1a byte by byte.
uint32_t line_sum(std::string_view s) {
  uint64_t h = 14695981039346656037ull;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 1099511628211ull;
  }
  for (; i < s.size(); ++i) h = (h ^ static_cast<unsigned char>(s[i])) * 1099511628211ull;
  return static_cast<uint32_t>(h ^ (h >> 32));
}

bool write_all(int fd, const char* data, size_t len, std::string& error) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      error = std::strerror(errno);
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::string StateIdentity::header() const {
  return std::string(kMagic) + ' ' + std::to_string(kVersion) + ' ' + format_ipv4(relay_ip) + ' ' +
         std::to_string(port_start) + ':' + std::to_string(port_end) + ' ' + nft_table;
}

void StateJournal::append_line(std::string& out, char type, uint64_t id, std::string_view payload) {
  const size_t start = begin_line(out, type, id);
  if (!payload.empty()) {
    out += ' ';
    out.append(payload);
  }
  end_line(out, start);
}

size_t StateJournal::begin_line(std::string& out, char type, uint64_t id) {
  const size_t start = out.size();
  out.append(9, ' ');  // checksum and its space, filled by end_line()
  out += type;
  out += ' ';
  char digits[24];
  auto [p, ec] = std::to_chars(digits, digits + sizeof digits, id);
  out.append(digits, p);
  return start;
}

void StateJournal::end_line(std::string& out, size_t start) {
  const uint32_t sum = line_sum(std::string_view(out).substr(start + 9));
  char head[16];
  std::snprintf(head, sizeof head, "%08x", sum);
  out.replace(start, 8, head, 8);
  out += '\n';
}

namespace {

bool parse_records(std::string_view text, const StateIdentity& expect, LoadedState& out,
                   std::string& error) {
  size_t nl = text.find('\n');
  if (nl == std::string_view::npos) {
    error = "no header line";
    return false;
  }
  const std::string_view header = text.substr(0, nl);
  if (header.substr(0, std::strlen(kMagic)) != kMagic) {
    error = "not a mediaproxy relay state file";
    return false;
  }
  if (header != expect.header()) {
    std::string shown(header.substr(0, 200));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
    error = "written by another version or for another relay (file says '" + shown +
            "', this relay is '" + expect.header() + "')";
    return false;
  }
  std::map<uint64_t, CounterCheckpoint> counters;
  size_t pos = nl + 1;
  size_t line_no = 1;
  while (pos < text.size()) {
    ++line_no;
    nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      error = "line " + std::to_string(line_no) + " is cut short (no line end)";
      return false;
    }
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    uint32_t sum = 0;
    auto bad = [&](const char* why) {
      error = "line " + std::to_string(line_no) + ": " + why;
      return false;
    };
    if (line.size() < 12 || line[8] != ' ' || line[10] != ' ') return bad("not a record");
    auto [sp, sec] = std::from_chars(line.data(), line.data() + 8, sum, 16);
    if (sec != std::errc() || sp != line.data() + 8) return bad("no checksum");
    const std::string_view body = line.substr(9);
    if (line_sum(body) != sum) return bad("checksum mismatch (the file is damaged)");
    const char type = body[0];
    std::string_view rest = body.substr(2);
    uint64_t id = 0;
    auto [ip, iec] = std::from_chars(rest.data(), rest.data() + rest.size(), id);
    if (iec != std::errc() || id == 0) return bad("no record id");
    rest.remove_prefix(static_cast<size_t>(ip - rest.data()));
    if (!rest.empty()) {
      if (rest[0] != ' ') return bad("no space after the record id");
      rest.remove_prefix(1);
    }
    if (id > out.last_id) out.last_id = id;
    std::string why;
    switch (type) {
      case 'S': {
        SessionState s;
        if (!session_state_from_json(rest, s, why)) return bad(("session record: " + why).c_str());
        out.sessions[id] = std::move(s);
        counters.erase(id);
        break;
      }
      case 'C': {
        CounterCheckpoint c;
        if (!counters_from_text(rest, c, why)) return bad(why.c_str());
        counters[id] = std::move(c);
        break;
      }
      case 'D':
        if (!rest.empty()) return bad("text after a delete record");
        out.sessions.erase(id);
        counters.erase(id);
        break;
      default:
        return bad("unknown record type");
    }
    ++out.lines;
  }
  for (auto& [id, c] : counters) {
    auto it = out.sessions.find(id);
    if (it != out.sessions.end()) apply_counters(it->second, c);
  }
  return true;
}

}  // namespace

bool parse_state_file(std::string_view text, const StateIdentity& expect, LoadedState& out,
                      std::string& error) {
  out = LoadedState{};
  if (parse_records(text, expect, out, error)) return true;
  out = LoadedState{};  // refused as a whole
  return false;
}

StateJournal::~StateJournal() {
  close();
}

void StateJournal::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool StateJournal::load(const std::string& path, const StateIdentity& id, LoadedState& out,
                        std::string& error) {
  error.clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) error = std::string("cannot read it: ") + std::strerror(errno);
    return false;
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = std::string("cannot read it: ") + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxFileBytes) {
      error = "larger than 1 GiB";
      ::close(fd);
      return false;
    }
  }
  ::close(fd);
  return parse_state_file(text, id, out, error);
}

bool StateJournal::rewrite(const std::string& path, const std::string& content,
                           std::string& error) {
  const std::string tmp = path + ".new";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = "cannot create " + tmp + ": " + std::strerror(errno);
    return false;
  }
  if (!write_all(fd, content.data(), content.size(), error) ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (error.empty()) error = std::string("cannot rename it: ") + std::strerror(errno);
    error = "cannot write " + tmp + ": " + error;
    ::close(fd);
    ::unlink(tmp.c_str());
    return false;
  }
  // The descriptor stays valid across the rename: keep appending to it.
  close();
  fd_ = fd;
  ::lseek(fd_, 0, SEEK_END);
  path_ = path;
  appended_ = 0;
  base_size_ = content.size();
  pending_.clear();
  drop_aside();
  return true;
}

bool StateJournal::flush(std::string& error) {
  if (pending_.empty()) return true;
  if (fd_ < 0) {
    pending_.clear();
    error = "the state file is not open";
    return false;
  }
  const bool ok = write_all(fd_, pending_.data(), pending_.size(), error);
  if (ok) appended_ += pending_.size();
  if (keeping_aside_) aside_ += pending_;
  pending_.clear();
  return ok;
}

bool StateJournal::adopt_compacted(int fd, const std::string& tmp_path, uint64_t size,
                                   std::string& error) {
  bool ok = write_all(fd, aside_.data(), aside_.size(), error);
  if (ok && ::rename(tmp_path.c_str(), path_.c_str()) != 0) {
    error = std::string("cannot rename it: ") + std::strerror(errno);
    ok = false;
  }
  const uint64_t aside = aside_.size();
  drop_aside();
  if (!ok) {
    error = "cannot write " + tmp_path + ": " + error;
    ::close(fd);
    ::unlink(tmp_path.c_str());
    return false;
  }
  // The descriptor stays valid across the rename: keep appending to it.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  ::lseek(fd_, 0, SEEK_END);
  appended_ = 0;
  base_size_ = size + aside;
  return true;
}

bool StateJournal::write_fully(int fd, std::string_view data, std::string& error) {
  return write_all(fd, data.data(), data.size(), error);
}

}  // namespace mp::relay
