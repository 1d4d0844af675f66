// The relay's state file: every session, kept across a restart of the process.
//
// An append-only journal of text lines in the runtime directory ([Relay]
// state_file). The first line names the relay it belongs to; each other line
// is a record with a checksum:
//
//   mediaproxy-relay-state 1 <relay_ip> <port_start>:<port_end> <nft_table>
//   <checksum hex> S <id> <session JSON (session_state.h)>
//   <checksum hex> C <id> <counter checkpoint>
//   <checksum hex> D <id>
//
// S replaces a session's record, C updates its traffic counters, D ends it.
// Records are buffered and written with one write(2) per loop iteration
// (StateJournal::flush); the file is compacted (rewritten with one S line per
// live session and renamed into place) when it has grown well past its live
// content. parse_state_file() is the pure reader: a file of another format
// version, another relay address, port range or nftables table, or with any
// line that does not check out, is refused as a whole with one line saying
// why, and the relay starts empty.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "common/address.h"
#include "relay/session_state.h"

namespace mp::relay {

struct StateIdentity {
  Ipv4 relay_ip;
  int port_start = 0, port_end = 0;
  std::string nft_table;
  std::string header() const;  // the first line, without its newline
};

struct LoadedState {
  std::map<uint64_t, SessionState> sessions;  // by journal id
  uint64_t last_id = 0;
  size_t lines = 0;
};

// Reads a whole state file. false with `error` (one line, for the log) if it
// is not one this relay may adopt.
bool parse_state_file(std::string_view text, const StateIdentity& expect, LoadedState& out,
                      std::string& error);

class StateJournal {
 public:
  StateJournal() = default;
  ~StateJournal();
  StateJournal(const StateJournal&) = delete;
  StateJournal& operator=(const StateJournal&) = delete;

  // Reads `path` into `out` (false with `error` when there is none or it is
  // refused; a missing file is error "" ).
  static bool load(const std::string& path, const StateIdentity& id, LoadedState& out,
                   std::string& error);

  // Starts a new file at `path` with `content` (header and S lines built
  // with the line helpers below), replacing what was there, and keeps it
  // open for appending.
  bool rewrite(const std::string& path, const std::string& content, std::string& error);
  bool is_open() const { return fd_ >= 0; }

  // Queue one record; written by flush().
  void put_session(uint64_t id, std::string_view json) { append_line(pending_, 'S', id, json); }
  // An S record whose JSON `write_json(std::string&)` appends in place (no
  // copy of a finished string).
  template <typename WriteJson>
  void put_session_with(uint64_t id, WriteJson&& write_json) {
    append_line_with(pending_, 'S', id, write_json);
  }
  void put_counters(uint64_t id, std::string_view text) { append_line(pending_, 'C', id, text); }
  void put_delete(uint64_t id) { append_line(pending_, 'D', id, {}); }
  bool has_pending() const { return !pending_.empty(); }
  void drop_pending() { pending_.clear(); }
  // Writes what is queued; false with `error` if the file cannot take it
  // (the records are dropped: the next compaction writes everything again).
  bool flush(std::string& error);

  // Compaction off the loop (state_compaction.h): while keeping aside, what
  // flush() writes is also kept in memory; adopt_compacted() appends it to
  // the compacted file (`fd`, open on `tmp_path`, `size` bytes written),
  // renames that into place and appends to it from then on. false with
  // `error` if that fails: `fd` is closed, `tmp_path` removed, and the
  // current file, which received every record, stays. drop_aside() stops
  // keeping aside without adopting anything.
  void keep_aside() {
    aside_.clear();
    keeping_aside_ = true;
  }
  void drop_aside() {
    aside_.clear();
    keeping_aside_ = false;
  }
  bool adopt_compacted(int fd, const std::string& tmp_path, uint64_t size, std::string& error);
  // write(2) until all of `data` is written; false with `error` otherwise.
  static bool write_fully(int fd, std::string_view data, std::string& error);

  // Bytes written since the last rewrite, and the size of that rewrite.
  uint64_t appended() const { return appended_; }
  uint64_t base_size() const { return base_size_; }
  const std::string& path() const { return path_; }
  void close();

  // One record line (with its newline) appended to `out`.
  static void append_line(std::string& out, char type, uint64_t id, std::string_view payload);
  // The same with a payload that `write_payload(std::string&)` appends.
  template <typename WritePayload>
  static void append_line_with(std::string& out, char type, uint64_t id,
                               WritePayload&& write_payload) {
    const size_t start = begin_line(out, type, id);
    out += ' ';
    write_payload(out);
    end_line(out, start);
  }

 private:
  // The two halves of a line: its head (checksum room, type, id), returning
  // where it starts, and the checksum and newline once the payload is in.
  static size_t begin_line(std::string& out, char type, uint64_t id);
  static void end_line(std::string& out, size_t start);

  int fd_ = -1;
  std::string path_;
  std::string pending_;
  uint64_t appended_ = 0;
  uint64_t base_size_ = 0;
  std::string aside_;
  bool keeping_aside_ = false;
};

}  // namespace mp::relay
