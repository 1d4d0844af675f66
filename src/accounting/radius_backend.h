// The RADIUS accounting backend (spec F.2), built on radcli: reads the
// radiusclient-style client.conf and the mediaproxy dictionary and sends one
// Accounting-Request per session end (attributes: radius_attributes.h).
#pragma once

#include <memory>
#include <string>

#include "accounting/backend.h"
#include "common/config.h"

namespace mp::accounting {

// nullptr with `error` set when client.conf or a dictionary cannot be read.
std::unique_ptr<Backend> make_radius_backend(const RadiusConfig& cfg, std::string& error);

}  // namespace mp::accounting
