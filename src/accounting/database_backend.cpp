// Placeholder until the database backend lands (issue #12).
#include "accounting/database_backend.h"

namespace mp::accounting {

std::unique_ptr<Backend> make_database_backend(const DatabaseConfig&, std::string& error) {
  error = "the database backend is not built yet";
  return nullptr;
}

}  // namespace mp::accounting
