// Placeholder (issue #12).
#include <catch2/catch.hpp>
