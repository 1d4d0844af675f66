// Control requests: the framing shared by the proxy-module socket (spec A.2)
// and by the dispatcher-to-relay link (spec B.2).
//
// A request is a command line, zero or more "name: value" header lines and an
// empty line, every line ending in CRLF. This file owns:
//   * parse_request(): a pure function from one complete request block (the
//     lines without the terminating empty line) to a Request or an error;
//   * RequestFramer: the incremental splitter that turns a byte stream into
//     request blocks, with a hard line-length limit.
// Header lines whose value is empty ("to_tag: ") are dropped, as the original
// dispatcher does; a non-empty line without ": " invalidates the request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mp::protocol {

struct Header {
  std::string name;
  std::string value;
  friend bool operator==(const Header&, const Header&) = default;
};

struct Request {
  std::string command;          // first line, verbatim
  std::vector<Header> headers;  // in arrival order, empty-valued lines removed

  // Value of the last header with this name, or nullptr.
  const std::string* find(std::string_view name) const;
};

// Limits applied by parse_request() and RequestFramer (documented in
// mediaproxy.8, section LIMITS).
inline constexpr size_t kMaxModuleLine = 16384;
inline constexpr size_t kMaxHeaders = 64;

struct ParseResult {
  std::optional<Request> request;  // set on success
  std::string error;               // set on failure: a human-readable reason
};

// `block` holds the command line and header lines, each terminated by CRLF,
// without the final empty line. Leading empty lines must already be removed.
ParseResult parse_request(std::string_view block);

// Splits a byte stream into request blocks. Not thread-safe; one per connection.
class RequestFramer {
 public:
  explicit RequestFramer(size_t max_line = kMaxModuleLine) : max_line_(max_line) {}

  enum class Status { Ok, LineTooLong };

  // Appends bytes. Every complete request is parsed and passed to `on_request`
  // in order. Returns LineTooLong (and stops consuming) when a line exceeds
  // the limit: the caller must close the connection.
  Status feed(std::string_view bytes, const std::function<void(ParseResult&&)>& on_request);

  // Bytes buffered for an incomplete request.
  size_t pending_bytes() const { return buffer_.size(); }
  // What was read of the request not complete yet: fed to a new framer, it
  // leaves that framer where this one is (a live upgrade hands it over).
  std::string unconsumed() const { return current_ + buffer_; }

 private:
  size_t max_line_;
  std::string buffer_;   // unconsumed bytes
  std::string current_;  // lines of the request being assembled
  size_t scan_from_ = 0;
};

}  // namespace mp::protocol
