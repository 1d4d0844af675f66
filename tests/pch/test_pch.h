// Precompiled header of the test programs (unit and kernel): Catch2's header
// and the standard and library headers most test files include. Every test
// file is compiled with it force-included, so each one parses these ~100,000
// lines once per build instead of once per file. Test files still include
// what they use; this header only makes that cheap.
#include <rapidjson/document.h>
#include <uv.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>
