// The forwarder side of the kernel forwarding tests (part of harness.h): the
// relay namespace's nftables state as `nft` shows it (tables, the elements of
// fwd_map and fwd6_map with their counters), and small helpers to make,
// adopt and fill NftForwarders there, read their counters, collect final
// counters (Finals) and run code without CAP_NET_ADMIN.
#pragma once

#include <fcntl.h>
#include <linux/capability.h>
#include <rapidjson/document.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/address.h"
#include "common/ip_address.h"
#include "harness_topology.h"
#include "kernel/nft_forwarder.h"
#include "kernel/nft_ruleset.h"

using mp::Endpoint;
using mp::IpAddress;
using mp::IpEndpoint;
using mp::Ipv4;
using mp::kernel::AdoptedRule;
using mp::kernel::Counters;
using mp::kernel::ForwardRule;
using mp::kernel::NftForwarder;

namespace kt {

inline std::string nft(const std::string& args, int* status = nullptr) {
  std::string out;
  int st = run("ip netns exec " + g_topo.rly + " nft " + args, &out);
  if (status) *status = st;
  return out;
}

// The JSON document of `nft -j <args>`: its line of output. (nft also writes
// errors about the rule it cannot print, "fwd statement has no output
// expression", which `nft()` mixes in.)
inline std::string nft_json(const std::string& args) {
  std::string out = nft("-j " + args);
  size_t at = out.find("{\"nftables\"");
  if (at == std::string::npos) return out;
  size_t end = out.find('\n', at);
  return out.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

inline bool table_exists(const std::string& table) {
  std::string out = nft("list tables");
  return out.find("table netdev " + table + "\n") != std::string::npos;
}

// One element of fwd_map as nft shows it.
struct NftElement {
  // "relay ip:new sport -> new daddr:new dport via next hop dev interface"
  std::string value;
  bool has_counter = false;
  uint64_t packets = 0;
  uint64_t bytes = 0;
};

// What fwd_map's value for a rule leaving from relay port `out_port` towards
// `to` through next hop `via` on interface `dev` reads as in NftElement.
inline std::string fwd_value(uint16_t out_port, Endpoint to, Ipv4 via, const std::string& dev) {
  return mp::format_endpoint({kRelayIp, out_port}) + " -> " + mp::format_endpoint(to) + " via " +
         mp::format_ipv4(via) + " dev " + dev;
}

// Elements of `map` (fwd_map or fwd6_map) per `nft -j list table`, "saddr . sport . dport" ->
// value and counter (the key's relay address, checked for fwd_map, is left out). The value is a
// concatenation that nft prints as [saddr, daddr, "a.b.c.d", next hop, interface name]: the third
// member is the new source and destination ports (network order) printed as an address, the last
// the interface index resolved to a name.
inline std::map<std::string, NftElement> nft_fwd_elements(const std::string& table,
                                                          const std::string& map = "fwd_map") {
  std::map<std::string, NftElement> out;
  std::string json = nft_json("list table netdev " + table);
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  if (doc.HasParseError() || !doc.HasMember("nftables")) FAIL("nft -j output: " << json);
  for (const auto& item : doc["nftables"].GetArray()) {
    if (!item.HasMember("map")) continue;
    const auto& m = item["map"];
    if (std::string(m["name"].GetString()) != map || !m.HasMember("elem")) continue;
    for (const auto& e : m["elem"].GetArray()) {
      // [ {"elem": {"val": {"concat": [ip, relay ip, ports]}, "counter": {...}}},
      //   {"concat": [saddr, daddr, ports, next hop, interface]} ]
      // (ports: source and destination port, network order, printed as an address)
      auto port_pair = [&json](const rapidjson::Value& x) {
        auto a = x.IsString() ? mp::parse_ipv4(x.GetString()) : std::nullopt;
        if (!a) FAIL("ports not printed as an address in nft -j output: " << json);
        uint8_t b[4];
        std::memcpy(b, &a->be, 4);
        return std::pair<int, int>(b[0] << 8 | b[1], b[2] << 8 | b[3]);
      };
      const auto& elem = e[0]["elem"];
      const auto& key = elem["val"]["concat"];
      if (!key.IsArray() || key.Size() != 3)
        FAIL("unexpected fwd_map key in nft -j output: " << json);
      const std::string relay_ip = map == "fwd_map" ? mp::format_ipv4(kRelayIp) : std::string();
      if (!relay_ip.empty() && key[1].GetString() != relay_ip)
        FAIL("fwd_map key names " << key[1].GetString() << ", not the relay's address: " << json);
      const auto [sport, dport] = port_pair(key[2]);
      std::string k = std::string(key[0].GetString()) + " . " + std::to_string(sport) + " . " +
                      std::to_string(dport);
      NftElement& el = out[k];
      if (elem.HasMember("counter")) {
        el.has_counter = true;
        el.packets = elem["counter"]["packets"].GetUint64();
        el.bytes = elem["counter"]["bytes"].GetUint64();
      }
      if (!e[1].IsObject() || !e[1].HasMember("concat") || e[1]["concat"].Size() != 5)
        FAIL("unexpected fwd_map value in nft -j output: " << json);
      const auto& v = e[1]["concat"];
      // An interface index nft cannot name would be printed as a number.
      auto text = [](const rapidjson::Value& x) {
        return x.IsString()  ? std::string(x.GetString())
               : x.IsInt64() ? std::to_string(x.GetInt64())
                             : std::string("?");
      };
      const auto [new_sport, new_dport] = port_pair(v[2]);
      el.value = text(v[0]) + ":" + std::to_string(new_sport) + " -> " + text(v[1]) + ":" +
                 std::to_string(new_dport) + " via " + text(v[3]) + " dev " + text(v[4]);
    }
  }
  return out;
}

inline std::map<uint32_t, Counters> counters(NftForwarder& f) {
  std::map<uint32_t, Counters> out;
  std::string error;
  REQUIRE(f.read_counters([&](uint32_t id, const Counters& c) { out[id] = c; }, error));
  return out;
}

struct Finals {
  std::map<uint32_t, Counters> by_id;
  size_t calls = 0;
  auto sink() {
    return [this](uint32_t id, const Counters& c) {
      by_id[id] = c;
      ++calls;
    };
  }
};

inline std::unique_ptr<NftForwarder> make(const std::string& table,
                                          std::optional<IpAddress> relay_ip6 = std::nullopt) {
  InNs in(g_topo.rly_fd);
  std::string error;
  auto f = NftForwarder::create(table, kRelayIp, relay_ip6, error);
  INFO(error);
  REQUIRE(f);
  return f;
}

// Runs `fn` in a child process without CAP_NET_ADMIN (inside the relay
// namespace); returns what it wrote.
inline std::string without_net_admin(const std::function<std::string()>& fn) {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    std::string text;
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (setns(g_topo.rly_fd, CLONE_NEWNET) != 0 || syscall(SYS_capget, &hdr, data) != 0) {
      text = "setup failed";
    } else {
      const uint32_t bit = 1u << (CAP_NET_ADMIN % 32);
      data[CAP_NET_ADMIN / 32].effective &= ~bit;
      data[CAP_NET_ADMIN / 32].permitted &= ~bit;
      data[CAP_NET_ADMIN / 32].inheritable &= ~bit;
      text = syscall(SYS_capset, &hdr, data) == 0 ? fn() : "capset failed";
    }
    ssize_t w = write(p[1], text.data(), text.size());
    _exit(w < 0 ? 1 : 0);
  }
  close(p[1]);
  std::string out;
  char buf[1024];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return out;
}

inline IpEndpoint ip_endpoint(Endpoint ep) {
  return IpEndpoint{IpAddress::from_v4(ep.ip), ep.port};
}

inline ForwardRule rule(IpEndpoint from, uint16_t in, uint16_t out, IpEndpoint to) {
  ForwardRule r;
  r.from = from;
  r.relay_in_port = in;
  r.relay_out_port = out;
  r.to = to;
  return r;
}

// add() of a rule the test expects the kernel to take: its id, or 0 after a
// failed check that shows the reason.
inline uint32_t add_ok(NftForwarder& fwd, const ForwardRule& r) {
  std::string error;
  const std::optional<uint32_t> id = fwd.add(r, error);
  INFO(error);
  CHECK(id);
  return id.value_or(0);
}

inline bool same_rule(const ForwardRule& a, const ForwardRule& b) {
  return a.from == b.from && a.relay_in_port == b.relay_in_port &&
         a.relay_out_port == b.relay_out_port && a.to == b.to;
}

inline std::unique_ptr<NftForwarder> adopt(const std::string& table,
                                           std::vector<AdoptedRule>& adopted, std::string& error,
                                           Ipv4 relay_ip = kRelayIp,
                                           std::optional<IpAddress> relay_ip6 = std::nullopt) {
  InNs in(g_topo.rly_fd);
  return NftForwarder::adopt(table, relay_ip, relay_ip6, adopted, error);
}

}  // namespace kt
