// Shared by the kernel forwarding tests (test_nft_forwarder.cpp for IPv4,
// test_nft_forwarder6.cpp for IPv6) and their main.cpp: the one header they
// include. The three-namespace network is in harness_topology.h, sockets,
// captures and counters of the traffic in harness_traffic.h, `nft` listings
// and the forwarder helpers in harness_nft.h. Header-only (inline); main.cpp
// builds and removes the topology around the Catch2 session.
#pragma once
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// What the test files use besides the three parts.
#include <signal.h>

#include <algorithm>

#include "common/log.h"

#include "harness_nft.h"
#include "harness_topology.h"
#include "harness_traffic.h"

using namespace kt;
