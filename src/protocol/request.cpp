// Implementation of the control-request framing (request.h, spec A.2 / B.2).
//
// Owns parse_request(), which turns one request block into a Request, and
// RequestFramer, which splits a byte stream on CRLF, enforces the line-length
// limit, skips empty lines between requests and hands every complete request
// to the caller. Neither throws on malformed input; errors are reported in
// ParseResult::error.
//
// Memory bound: a request may carry at most kMaxHeaders header lines (counting
// the empty-valued ones that are dropped). Once a request being assembled goes
// over that, the framer stops storing its lines and, when its terminating
// empty line arrives, reports it as an error. The over-limit state is
// recorded by appending a bare CRLF to `current_`: a stored line can never be
// empty, so a block ending in "\r\n\r\n" cannot occur otherwise.
#include "protocol/request.h"

#include <utility>

namespace mp::protocol {

namespace {

constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kHeaderSeparator = ": ";

ParseResult failure(std::string reason) {
  ParseResult r;
  r.error = std::move(reason);
  return r;
}

std::string too_many_headers() {
  return "too many header lines (limit " + std::to_string(kMaxHeaders) + ")";
}

size_t count_lines(std::string_view s) {
  size_t n = 0;
  for (size_t pos = s.find(kCrlf); pos != std::string_view::npos; pos = s.find(kCrlf, pos + 2)) ++n;
  return n;
}

bool has_overflow_marker(std::string_view current) {
  return current.size() >= 4 && current.substr(current.size() - 4) == "\r\n\r\n";
}

}  // namespace

const std::string* Request::find(std::string_view name) const {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it)
    if (it->name == name) return &it->value;
  return nullptr;
}

ParseResult parse_request(std::string_view block) {
  if (block.empty()) return failure("empty request");
  Request request;
  bool have_command = false;
  size_t header_lines = 0;
  size_t pos = 0;
  while (pos < block.size()) {
    // The last line may lack its CRLF; accept it as if it were there.
    const size_t eol = block.find(kCrlf, pos);
    const std::string_view line =
        eol == std::string_view::npos ? block.substr(pos) : block.substr(pos, eol - pos);
    pos = eol == std::string_view::npos ? block.size() : eol + kCrlf.size();

    if (!have_command) {
      if (line.empty()) return failure("empty command line");
      request.command.assign(line);
      have_command = true;
      continue;
    }
    ++header_lines;
    if (line.empty())
      return failure("empty line inside request block (header " + std::to_string(header_lines) +
                     ")");
    if (header_lines > kMaxHeaders) return failure(too_many_headers());
    // Spec A.2: a line whose text ends with ": " has an empty value and is
    // dropped before it is even split.
    if (line.size() >= kHeaderSeparator.size() &&
        line.substr(line.size() - kHeaderSeparator.size()) == kHeaderSeparator)
      continue;
    const size_t sep = line.find(kHeaderSeparator);
    if (sep == std::string_view::npos)
      return failure("malformed header line " + std::to_string(header_lines) +
                     ": no \": \" separator");
    if (sep == 0)
      return failure("malformed header line " + std::to_string(header_lines) +
                     ": empty header name");
    request.headers.push_back(
        Header{std::string(line.substr(0, sep)), std::string(line.substr(sep + 2))});
  }
  ParseResult r;
  r.request = std::move(request);
  return r;
}

RequestFramer::Status RequestFramer::feed(std::string_view bytes,
                                          const std::function<void(ParseResult&&)>& on_request) {
  buffer_.append(bytes);
  // Completed requests are collected first and delivered after the framer's
  // state is final, so a callback may safely destroy the framer.
  std::vector<ParseResult> ready;
  Status status = Status::Ok;
  size_t start = 0;          // beginning of the current line in buffer_
  size_t scan = scan_from_;  // where the CRLF search resumes
  for (;;) {
    const size_t eol = buffer_.find(kCrlf, scan);
    if (eol == std::string::npos) {
      const size_t pending = buffer_.size() - start;
      // A pending line of max_line_ + 1 bytes is still fine if its last byte
      // is the CR of the terminating CRLF.
      if (pending > max_line_ && (pending - max_line_ > 1 || buffer_.back() != '\r'))
        status = Status::LineTooLong;
      // A trailing CR may be completed by the next chunk: rescan it then.
      scan = buffer_.size() > start ? buffer_.size() - 1 : start;
      break;
    }
    const size_t length = eol - start;
    if (length > max_line_) {
      status = Status::LineTooLong;  // keep the line: every later feed fails too
      scan = start;
      break;
    }
    const std::string_view line(buffer_.data() + start, length);
    if (line.empty()) {
      if (!current_.empty()) {
        ready.push_back(has_overflow_marker(current_) ? failure(too_many_headers())
                                                      : parse_request(current_));
        current_.clear();
      }
      // else: an empty line between requests, ignored.
    } else if (!has_overflow_marker(current_)) {
      if (!current_.empty() && count_lines(current_) > kMaxHeaders) {
        current_ += kCrlf;  // over the limit: mark and stop storing
      } else {
        current_ += line;
        current_ += kCrlf;
      }
    }
    start = eol + kCrlf.size();
    scan = start;
  }
  buffer_.erase(0, start);
  scan_from_ = scan - start;

  for (ParseResult& r : ready) on_request(std::move(r));
  return status;
}

}  // namespace mp::protocol
