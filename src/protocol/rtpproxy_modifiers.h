// The modifier grammar of the rtpproxy U and L commands (src/protocol only),
// used by the command parser in rtpproxy_command.cpp once it has the verb.
// The letters after the verb are read left to right as rtpproxy's
// rpcpv1_ul.c reads them: a/s, w, i/e (at most two), 4/6, n, z<ms>,
// c<pt>[,<pt>...], l<addr> and r<addr>; where rtpproxy is lax this grammar is
// strict (ptime 1..999, well-formed codec lists, literal addresses).
#pragma once

#include <string>
#include <string_view>

#include "protocol/rtpproxy_command.h"
#include "protocol/rtpproxy_syntax.h"

namespace mp::protocol::rtpproxy_syntax {

// Reads the U/L modifier letters `mods` into `m`. On a fault returns false
// with its E<code> and reason in `faults`; `verb` ("update", "lookup") starts
// the reason.
bool parse_ul_modifiers(std::string_view mods, const std::string& verb, Faults& faults,
                        RtpproxyModifiers& m);

}  // namespace mp::protocol::rtpproxy_syntax
