// Placeholder until the RADIUS backend lands (issue #12).
#include "accounting/radius_backend.h"

namespace mp::accounting {

std::unique_ptr<Backend> make_radius_backend(const RadiusConfig&, std::string& error) {
  error = "the RADIUS backend is not built yet";
  return nullptr;
}

}  // namespace mp::accounting
