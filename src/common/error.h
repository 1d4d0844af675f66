// How a function says that it failed, and why.
//
// One convention for the whole tree: a function that can fail returns bool,
// or std::optional<T> when it produces a value, and explains a failure in a
// `std::string& error` parameter. That parameter comes last, is named
// `error`, is written only on failure, and holds a human-readable reason fit
// for a log line or a reply. There are no nullable error pointers, no strings
// where "" means success, and no sentinel values (0, -1) standing for
// failure. System and library codes (errno, libuv, mbedTLS, netlink) may
// travel as int only inside the layer that talks to the system (within
// src/kernel/, within the relay's socket code); they are turned into a
// reason when they leave it.
#pragma once

#include <string>
#include <utility>

namespace mp {

// Stores `why` in `error` and returns false: `return fail(error, "...");`.
inline bool fail(std::string& error, std::string why) {
  error = std::move(why);
  return false;
}

}  // namespace mp
