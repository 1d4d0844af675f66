// The management protocol's text layer (spec section C), apart from any
// socket: how a client's byte stream is cut into command lines and which
// command a line names. ManagementServer feeds it what a connection reads and
// acts on the result; keeping it pure lets the unit tests and the fuzz target
// (fuzz/fuzz_management.cpp) reach every byte sequence a client can send.
//
// A command line ends with LF; one CR before the LF is dropped, and so are
// spaces and tabs around the command. A line may hold at most kMaxCommandLine bytes
// before its LF (a CR counted): a longer one is refused whether or not its LF
// has arrived, and the server then closes the connection (mediaproxy.8,
// "Management interface"). Commands are matched exactly and case-sensitively,
// as AG MediaProxy does: `summary`, `sessions`, `version`, `quit`, `exit`;
// an empty line is ignored and anything else is answered `error`.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mp::management {

inline constexpr size_t kMaxCommandLine = 16384;

enum class ManagementCommand {
  Empty,     // blank line: no reply
  Summary,   // every relay's summary object
  Sessions,  // every live session's record
  Version,   // the version string
  Quit,      // `quit` or `exit`: close the connection
  Unknown,   // anything else: answered `error`
};

// Which command `line` names: a line as take_management_line() returns it
// (without its CR LF), so a second CR is part of the command.
ManagementCommand parse_management_command(std::string_view line);

enum class LineStatus {
  Line,      // `line` holds the next command line (without CR LF); consumed from `buffer`
  NeedMore,  // no complete line yet; `buffer` is unchanged
  TooLong,   // the line at the front exceeds kMaxCommandLine: close the connection
};

// Takes the first complete line off the front of `buffer`.
LineStatus take_management_line(std::string& buffer, std::string& line);

}  // namespace mp::management
