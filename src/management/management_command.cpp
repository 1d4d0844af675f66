// Management command lines and their framing (management_command.h).
#include "management/management_command.h"

namespace mp::management {

ManagementCommand parse_management_command(std::string_view line) {
  const size_t first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos) return ManagementCommand::Empty;
  const size_t last = line.find_last_not_of(" \t");
  const std::string_view cmd = line.substr(first, last - first + 1);
  if (cmd == "summary") return ManagementCommand::Summary;
  if (cmd == "sessions") return ManagementCommand::Sessions;
  if (cmd == "version") return ManagementCommand::Version;
  if (cmd == "quit" || cmd == "exit") return ManagementCommand::Quit;
  return ManagementCommand::Unknown;
}

LineStatus take_management_line(std::string& buffer, std::string& line) {
  const size_t nl = buffer.find('\n');
  if (nl == std::string::npos)
    return buffer.size() > kMaxCommandLine ? LineStatus::TooLong : LineStatus::NeedMore;
  if (nl > kMaxCommandLine) return LineStatus::TooLong;
  line.assign(buffer, 0, nl);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  buffer.erase(0, nl + 1);
  return LineStatus::Line;
}

}  // namespace mp::management
