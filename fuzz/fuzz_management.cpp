// Fuzz target for the management protocol's text layer
// (management/management_command.h): what ManagementServer does with the
// bytes a management client sends, without the socket.
//
// The input is a client's byte stream: the bytes as they are, or (when the
// first byte has its top bit set) repeated and padded with a run of 'x' so
// that lines reach the 16384-byte limit. It is cut into lines once in one
// piece and once in reads whose sizes come from the input itself. Invariants:
//   * the lines and the final outcome (need more / too long) do not depend on
//     how the stream was split into reads;
//   * every line is the stream's next bytes up to an LF, without the LF and
//     at most one CR before it, holds no LF and at most kMaxCommandLine bytes;
//     the buffer keeps exactly the bytes after it;
//   * too long is reported exactly when the front line exceeds the limit;
//   * parse_management_command() names a command only for its exact word
//     (spaces and tabs around it aside), reports blank lines as Empty, and
//     is unchanged by extra spaces and tabs around the line.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "management/management_command.h"

using namespace mp::management;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_management: invariant violated: %s\n", what);
    std::abort();
  }
}

std::string_view trim(std::string_view s) {
  const size_t first = s.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

void check_command(std::string_view line) {
  const ManagementCommand c = parse_management_command(line);
  const std::string_view word = trim(line);
  switch (c) {
    case ManagementCommand::Empty:
      check(word.empty(), "Empty only for blank lines");
      break;
    case ManagementCommand::Summary:
      check(word == "summary", "summary is exact");
      break;
    case ManagementCommand::Sessions:
      check(word == "sessions", "sessions is exact");
      break;
    case ManagementCommand::Version:
      check(word == "version", "version is exact");
      break;
    case ManagementCommand::Quit:
      check(word == "quit" || word == "exit", "quit/exit are exact");
      break;
    case ManagementCommand::Unknown:
      check(!word.empty() && word != "summary" && word != "sessions" && word != "version" &&
                word != "quit" && word != "exit",
            "Unknown only for other words");
      break;
  }
  std::string padded = " \t";
  padded += line;
  padded += "\t ";
  check(parse_management_command(padded) == c, "padding keeps the command");
}

struct Outcome {
  std::vector<std::string> lines;
  LineStatus end = LineStatus::NeedMore;  // NeedMore or TooLong
  std::string rest;                       // the buffer at the end
};

// Feeds `stream` in reads of the given sizes (cycled; none: all at once), as
// ManagementServer::on_data does, checking every line against the stream.
Outcome run(std::string_view stream, const std::vector<size_t>& reads) {
  Outcome out;
  std::string buffer;
  size_t fed = 0, consumed = 0, r = 0;
  while (fed < stream.size() && out.end != LineStatus::TooLong) {
    size_t n = reads.empty() ? stream.size() : reads[r++ % reads.size()];
    if (n == 0 || n > stream.size() - fed) n = stream.size() - fed;
    buffer.append(stream.substr(fed, n));
    fed += n;
    for (;;) {
      const size_t held = buffer.size();
      const std::string_view pending = stream.substr(consumed, fed - consumed);
      std::string line;
      const LineStatus st = take_management_line(buffer, line);
      const size_t nl = pending.find('\n');
      if (st == LineStatus::Line) {
        check(nl != std::string_view::npos && nl <= kMaxCommandLine,
              "a line ends at an LF within the limit");
        check(line.size() <= kMaxCommandLine, "line bounded");
        const bool cr = nl > 0 && pending[nl - 1] == '\r';
        check(line.size() + (cr ? 1 : 0) == nl, "the line is all up to the LF but one CR");
        check(pending.compare(0, line.size(), line) == 0, "line comes from the stream in order");
        check(buffer.size() == held - (nl + 1), "the line and its LF are consumed");
        consumed += nl + 1;
        check_command(line);
        out.lines.push_back(std::move(line));
        continue;
      }
      check(buffer.size() == held, "no line: buffer unchanged");
      const bool too_long =
          nl == std::string_view::npos ? pending.size() > kMaxCommandLine : nl > kMaxCommandLine;
      check((st == LineStatus::TooLong) == too_long, "too long exactly past the limit");
      if (st == LineStatus::TooLong) out.end = LineStatus::TooLong;  // the server closes here
      break;
    }
  }
  check(buffer == stream.substr(consumed, fed - consumed), "buffer holds the unconsumed bytes");
  out.rest = std::move(buffer);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string stream(input);
  if (size >= 2 && (data[0] & 0x80)) {
    const size_t copies = 1 + (data[0] & 0x07);
    for (size_t i = 1; i < copies; ++i) stream += input;
    // A run that brings a line to the limit, give or take a few bytes.
    const size_t run = kMaxCommandLine - 4 + (data[1] & 0x07);
    stream.insert(data[1] % (stream.size() + 1), std::string(run, 'x'));
  }
  check_command(input);

  const Outcome whole = run(stream, {});
  // Reads of 0-63 bytes; 256 times that on long streams (a byte at a time
  // would make both the server's and this check's scans quadratic).
  const size_t scale = stream.size() > 4096 ? 256 : 1;
  std::vector<size_t> reads;
  for (size_t i = 0; i < size && i < 16; ++i) reads.push_back((data[i] % 64) * scale);
  std::vector<Outcome> others{run(stream, reads)};
  if (stream.size() <= 4096) others.push_back(run(stream, {1}));
  for (const Outcome& o : others) {
    check(o.lines == whole.lines, "lines do not depend on the reads");
    check(o.end == whole.end, "outcome does not depend on the reads");
    if (whole.end == LineStatus::NeedMore) check(o.rest == whole.rest, "same rest");
  }
  return 0;
}
