// Fuzz target for the control-request framing (protocol/request.h) and the
// relay command line (protocol/relay_link.h).
//
// Invariants checked on every input:
//   * parse_request() either yields a request or an error, never both; a
//     request has a non-empty command, at most kMaxHeaders headers, no empty
//     names or values, and re-serialising it parses back to the same request;
//   * RequestFramer gives the same results whether the bytes arrive in one
//     chunk or in arbitrary pieces, and never buffers more than a line;
//   * every request that is a valid relay command survives
//     serialize_command() -> framing -> to_relay_command() unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/relay_link.h"
#include "protocol/request.h"

using namespace mp::protocol;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_request: invariant violated: %s\n", what);
    std::abort();
  }
}

bool same(const ParseResult& a, const ParseResult& b) {
  if (a.error != b.error || a.request.has_value() != b.request.has_value()) return false;
  if (!a.request) return true;
  return a.request->command == b.request->command && a.request->headers == b.request->headers;
}

std::string to_block(const Request& r) {
  std::string out = r.command + "\r\n";
  for (const Header& h : r.headers) out += h.name + ": " + h.value + "\r\n";
  return out;
}

void check_request(const ParseResult& r) {
  check(r.request.has_value() == r.error.empty(), "exactly one of request / error");
  if (!r.request) return;
  check(!r.request->command.empty(), "non-empty command");
  check(r.request->headers.size() <= kMaxHeaders, "header limit");
  for (const Header& h : r.request->headers) {
    check(!h.name.empty(), "non-empty header name");
    check(!h.value.empty(), "empty-valued headers are dropped");
  }
  const ParseResult again = parse_request(to_block(*r.request));
  check(same(r, again), "parse -> serialise -> parse round-trip");
}

void check_relay_command(const Request& request) {
  Request copy = request;
  std::string error;
  auto cmd = to_relay_command(std::move(copy), error);
  check(cmd.has_value() == error.empty(), "to_relay_command: exactly one of command / error");
  if (!cmd) return;
  const std::string wire = serialize_command(*cmd);
  RequestFramer framer(wire.size() + 2);
  std::vector<RelayCommand> decoded;
  const auto status = framer.feed(wire, [&](ParseResult&& r) {
    check(r.request.has_value(), "serialised command parses");
    auto again = to_relay_command(std::move(*r.request), error);
    check(again.has_value(), "serialised command converts");
    decoded.push_back(std::move(*again));
  });
  check(status == RequestFramer::Status::Ok, "serialised command fits");
  check(decoded.size() == 1 && decoded[0] == *cmd, "relay command round-trip");
  check(framer.pending_bytes() == 0, "nothing left over");
}

struct Run {
  std::vector<ParseResult> results;
  bool too_long = false;
  size_t pending = 0;
};

Run run_framer(std::string_view input, size_t max_line, uint64_t schedule) {
  Run run;
  RequestFramer framer(max_line);
  const auto sink = [&](ParseResult&& r) { run.results.push_back(std::move(r)); };
  size_t pos = 0;
  while (pos < input.size() || (pos == 0 && input.empty())) {
    size_t n = input.size() - pos;
    if (schedule != 0) {
      // xorshift-driven chunk sizes 1..16 (or the rest of the input)
      schedule ^= schedule << 13;
      schedule ^= schedule >> 7;
      schedule ^= schedule << 17;
      n = std::min<size_t>(n, 1 + schedule % 16);
    }
    const auto status = framer.feed(input.substr(pos, n), sink);
    pos += n;
    check(framer.pending_bytes() <= max_line + 1 + (status == RequestFramer::Status::Ok ? 0 : n),
          "framer buffers at most one line");
    if (status == RequestFramer::Status::LineTooLong) {
      run.too_long = true;
      break;
    }
    if (input.empty()) break;
  }
  run.pending = framer.pending_bytes();
  return run;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const ParseResult direct = parse_request(input);
  check_request(direct);
  if (direct.request) check_relay_command(*direct.request);

  // Small limit for odd-sized inputs so that LineTooLong is exercised too.
  const size_t max_line = size % 2 ? 32 : kMaxModuleLine;
  const Run whole = run_framer(input, max_line, 0);
  const Run pieces = run_framer(input, max_line, 0x9e3779b97f4a7c15ull ^ size);
  check(whole.too_long == pieces.too_long, "chunking does not change LineTooLong");
  check(whole.results.size() == pieces.results.size(), "chunking does not change the count");
  for (size_t i = 0; i < whole.results.size(); ++i) {
    check(same(whole.results[i], pieces.results[i]), "chunking does not change results");
    check_request(whole.results[i]);
    if (whole.results[i].request) check_relay_command(*whole.results[i].request);
  }
  if (!whole.too_long) check(whole.pending == pieces.pending, "same pending bytes");
  return 0;
}
