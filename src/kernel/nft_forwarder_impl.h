// The in-kernel forwarder's private state (src/kernel only): the rule-id
// bookkeeping, the transaction engine with its retries, and table recovery,
// as NftForwarder::Impl. The public operations are in nft_forwarder.cpp, the
// table's lifecycle (probe, create, adopt) in nft_table.cpp, route following
// in nft_follow.cpp; nft_forwarder.cpp's header comment describes the design.
#pragma once

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "common/config.h"
#include "common/log.h"
#include "kernel/nft_netlink.h"
#include "kernel/nft_ruleset.h"
#include "kernel/route_lookup.h"

#include "kernel/nft_forwarder.h"

namespace mp::kernel {

using namespace detail;

namespace forwarder {

// Rule ids: 1..kMaxId.
inline constexpr uint32_t kMaxId = 0x00ffffff;

inline const char* object_of(uint16_t msg_type) {
  switch (msg_type) {
    case NFT_MSG_NEWTABLE:
    case NFT_MSG_DELTABLE:
      return "the table";
    case NFT_MSG_NEWSET:
      return "a map with element counters";
    case NFT_MSG_NEWCHAIN:
      return "a filter chain on the ingress hook of the network interfaces";
    case NFT_MSG_NEWRULE:
      return "a rule (lookup, payload rewrite with checksum update, fwd)";
    case NFT_MSG_NEWSETELEM:
      return "map elements";
    case NFT_MSG_DELSETELEM:
      return "the deletion of map elements";
    default:
      return "the transaction";
  }
}

// Error text for a failed creation of the ruleset (create() and probe()).
inline std::string ruleset_error(const BatchError& be, const std::string& table) {
  std::string what = "cannot create nftables table netdev " + table + " (failed at " +
                     object_of(be.msg_type) + ")";
  if (be.err == ENOENT)
    return what + ": " + std::strerror(ENOENT) +
           " (nf_tables is not available in this kernel or lacks a feature the forwarder needs: "
           "CONFIG_NF_TABLES, CONFIG_NF_TABLES_NETDEV, ingress chains (CONFIG_NETFILTER_INGRESS), "
           "maps with counters, payload rewrite, fwd (CONFIG_NFT_FWD_NETDEV); or set "
           "forwarding = userspace)";
  return describe_errno(be.err, what);
}

// Why a table of our name whose comment names no relay is replaced.
inline constexpr const char* kNotOursComment =
    "its comment names no relay address: made by an older version of mediaproxy or by hand";

inline RuleKey key_of(const ForwardRule& r) {
  return RuleKey{r.from.ip, r.from.port, r.relay_in_port};
}

// The maps of a table made for `relay`, IPv4's first.
inline size_t map_count(const RelayAddresses& relay) {
  return relay.ip6 ? 2 : 1;
}
inline constexpr IpAddress::Family kMapFamilies[] = {IpAddress::Family::V4, IpAddress::Family::V6};

// The interfaces the ingress chain hooks: every non-loopback one (at most
// 256, the kernel's limit per chain), by name and index. false with `why`
// if there is none.
inline bool hookable_devices(RouteLookup& routes, std::vector<std::string>& devices,
                             std::vector<uint32_t>& hooked, std::string& why) {
  devices.clear();
  hooked.clear();
  std::vector<Interface> all;
  if (!routes.interfaces(all, why)) return false;
  for (const Interface& i : all) {
    if (devices.size() == 256) {
      LOG_WARN(
          "kernel forwarding: more than 256 network interfaces; only the first 256 are hooked");
      break;
    }
    devices.push_back(i.name);
    hooked.push_back(i.ifindex);
  }
  if (devices.empty()) {
    why =
        "this network namespace has no network interface but loopback, so there is nothing to "
        "forward between";
    return false;
  }
  return true;
}

inline std::string interface_name(RouteLookup& routes, uint32_t ifindex) {
  std::vector<Interface> all;
  std::string ignored;
  if (routes.interfaces(all, ignored))
    for (const Interface& i : all)
      if (i.ifindex == ifindex) return i.name;
  return "#" + std::to_string(ifindex);
}

// Errors that concern single elements of a batch (the table was changed by
// someone else) rather than the whole socket or kernel.
inline bool element_error(int err) {
  return err == EEXIST || err == ENOENT || err == EBUSY;
}

}  // namespace forwarder

using namespace forwarder;

struct NftForwarder::Impl {
  enum class State : uint8_t {
    kPendingAdd,     // queued, not in the kernel
    kInstalled,      // in the kernel
    kPendingRemove,  // in the kernel, deletion queued (alone or by a replacing add)
    kCancelled,      // not (or no longer) in the kernel; reported at the end of commit(),
                     // with zero counters if it never was
  };
  struct Entry {
    ForwardRule rule;
    NextHop hop;
    RuleKey key;
    State state = State::kPendingAdd;
    uint32_t replaces = 0;     // kPendingAdd: id deleted in the same transaction
    uint32_t replaced_by = 0;  // kPendingRemove: the kPendingAdd that deletes it
    Counters last;             // last counters read (base + kernel)
    Counters base;             // counted by elements lost with a vanished table
  };
  // One transaction's worth of work for one rule: delete `remove`, add `add`.
  struct Unit {
    uint32_t remove = 0;
    uint32_t add = 0;
    size_t elements() const { return (remove ? 1u : 0u) + (add ? 1u : 0u); }
  };

  std::string table;
  RelayAddresses relay;
  std::vector<std::string> devices;  // the ingress chain's
  std::vector<uint32_t> hooked;      // their interface indexes
  RouteLookup routes;
  Netlink nl;
  Batch batch;
  std::vector<char> request_buf = std::vector<char>(Batch::kMaxMessage + 4096);

  std::unordered_map<uint32_t, Entry> entries;
  std::unordered_map<RuleKey, uint32_t, RuleKeyHash> kernel_owner;   // key -> id installed
  std::unordered_map<RuleKey, uint32_t, RuleKeyHash> pending_owner;  // key -> id queued
  std::vector<uint32_t> pending_adds;
  std::vector<uint32_t> pending_removes;
  std::vector<uint32_t> cancelled;
  uint32_t next_id = 1;
  std::vector<std::pair<uint32_t, Counters>> dumped;  // reused by dump_fwd(); totals
  bool table_lost = false;  // deleted behind our back; commit() rebuilds it
  bool keep_table = false;  // keep_table_on_exit()

  // The relay's address of `family` (IPv6: only with relay.ip6).
  IpAddress relay_of(IpAddress::Family family) const {
    return family == IpAddress::Family::V4 ? IpAddress::from_v4(relay.ip) : *relay.ip6;
  }
  // The map key of packets that `key` describes (they are sent to the relay's address).
  FwdKey key_of(const RuleKey& key) const { return make_fwd_key(key, relay_of(key.saddr.family)); }

  Entry* find(uint32_t id) {
    auto it = entries.find(id);
    return it == entries.end() ? nullptr : &it->second;
  }

  uint32_t alloc_id() {
    for (uint32_t tries = 0; tries < kMaxId; ++tries) {
      uint32_t id = next_id;
      next_id = next_id >= kMaxId ? 1 : next_id + 1;
      if (!entries.count(id)) return id;
    }
    return 0;
  }

  // The rule installed in the kernel whose fwd_map or fwd6_map element is
  // `v` (its id in `id`), or nullptr for elements that are not ours.
  Entry* entry_of(const ElementView& v, uint32_t& id) {
    const std::optional<RuleKey> key = parse_fwd_key(v.key, v.key_len);
    if (!key) return nullptr;
    auto owner = kernel_owner.find(*key);
    if (owner == kernel_owner.end()) return nullptr;
    id = owner->second;
    auto it = entries.find(id);
    if (it == entries.end()) return nullptr;
    Entry& e = it->second;
    if (e.state != State::kInstalled && e.state != State::kPendingRemove) return nullptr;
    return &e;
  }

  // Updates the rule's `last` from its element; returns it (with `base`).
  static const Counters& take(Entry& e, const ElementView& v) {
    e.last = Counters{e.base.packets + v.packets, e.base.bytes + v.bytes};
    return e.last;
  }

  // One dump of each map into `dumped` (id, counters) for known ids. 0 or errno.
  int dump_fwd() {
    dumped.clear();
    for (size_t m = 0; m < map_count(relay); ++m)
      if (int err = dump_map(fwd_map_of(kMapFamilies[m]))) return err;
    return 0;
  }

  // Appends one dump of map `set` to `dumped`. 0 or errno.
  int dump_map(const char* set) {
    const size_t start = dumped.size();
    int err = EINTR;
    for (int attempt = 0; attempt < 3 && err == EINTR; ++attempt) {
      dumped.resize(start);
      nlmsghdr* req = build_dump_elements(request_buf.data(), nl.take_seq(), table, set);
      bool malformed = false;
      err = nl.request(req, [&](const nlmsghdr* nlh) {
        if (!parse_elements(nlh, [&](const ElementView& v) {
              uint32_t id;
              if (Entry* e = entry_of(v, id)) dumped.emplace_back(id, take(*e, v));
            }))
          malformed = true;
      });
      if (err == 0 && malformed) err = EPROTO;
    }
    return err;
  }

  // Reads the counters of the installed rules `ids` into their entries'
  // `last`. 0, or the errno of the dump tried last (the entries then keep
  // the counters read before).
  int read_final(const std::vector<uint32_t>& ids) {
    if (ids.empty()) return 0;
    // Answers to a GETSETELEM come one message (~4 KiB of socket memory) per
    // element; keep a request's answers well inside the receive buffer.
    size_t chunk = std::clamp<size_t>(nl.receive_buffer() / 8192, 16, kMaxBatchElements);
    bool use_dump = ids.size() > 2 * chunk || ids.size() * 2 > kernel_owner.size();
    int err = 0;
    if (!use_dump) {
      for (size_t m = 0; m < map_count(relay) && err == 0; ++m) {
        std::vector<uint32_t> of_map;
        for (uint32_t id : ids)
          if (entries.at(id).key.saddr.family == kMapFamilies[m]) of_map.push_back(id);
        for (size_t i = 0; i < of_map.size() && err == 0; i += chunk) {
          nlmsghdr* req = build_element_request(request_buf.data(), nl.take_seq());
          ElementWriter w(req, table, fwd_map_of(kMapFamilies[m]));
          for (size_t j = i; j < of_map.size() && j < i + chunk; ++j) {
            const FwdKey k = key_of(entries.at(of_map[j]).key);
            w.add(k.bytes, k.len);
          }
          w.finish();
          err = nl.request(req, [&](const nlmsghdr* nlh) {
            parse_elements(nlh, [&](const ElementView& v) {
              uint32_t id;
              if (Entry* e = entry_of(v, id)) take(*e, v);
            });
          });
        }
      }
      if (err == 0) return 0;
      // ENOENT: an element is gone (deleted by hand); the kernel stops at it.
      LOG_DEBUG("kernel forwarding: reading final counters by key failed (%s), dumping the map",
                std::strerror(err));
    }
    err = dump_fwd();
    if (err) {
      LOG_WARN(
          "%s; final counters of %zu removed rules are the last ones read",
          describe_errno(err, "cannot read nftables counters of table netdev " + table).c_str(),
          ids.size());
      return err;
    }
    return 0;
  }

  // false if our table or one of its maps is gone (ENOENT on GETSET).
  bool ruleset_present() {
    for (size_t m = 0; m < map_count(relay); ++m) {
      nlmsghdr* req =
          build_get_set(request_buf.data(), nl.take_seq(), table, fwd_map_of(kMapFamilies[m]));
      if (nl.request(req, [](const nlmsghdr*) {}) == ENOENT) return false;
    }
    return true;
  }

  // After ENOENT: true (and logged) if the table was deleted behind our back.
  bool lost_table(int err) {
    if (err != ENOENT || ruleset_present()) return false;
    LOG_ERROR(
        "kernel forwarding: nftables table netdev %s (or a map in it) was deleted behind "
        "mediaproxy's "
        "back, e.g. by `nft flush ruleset` in an nftables.service reload; packets of kernel-"
        "forwarded streams go to userspace until it is rebuilt, which happens now. Keep "
        "`flush ruleset` out of the firewall configuration (flush only its own tables)",
        table.c_str());
    table_lost = true;
    return true;
  }

  // Sends units [begin, end) in batches, all-or-error. 0 or errno.
  int send_all(const std::vector<Unit>& units) {
    for (size_t i = 0; i < units.size();) {
      size_t j = i;
      size_t n = 0;
      while (j < units.size() && n + units[j].elements() <= kMaxBatchElements)
        n += units[j++].elements();
      if (int err = send_units(units, i, j)) return err;
      for (; i < j; ++i) applied(units[i]);
    }
    return 0;
  }

  // Recreates the table after it vanished and reinstalls every rule the
  // kernel had, counting on from the last counters read (packets forwarded
  // between that read and the loss are not counted). Rules whose deletion
  // was queued are gone for good: they are reported by the next commit().
  // 0 or errno; on failure the next commit() or read_counters() starts over.
  int rebuild() {
    table_lost = true;
    BatchError be;
    if (int err = nl.transact(
            batch, [&](Batch& b) { return put_ruleset(b, table, relay, devices); }, be))
      return err;
    kernel_owner.clear();
    std::vector<Unit> units;
    for (auto& [id, e] : entries) {
      if (e.state == State::kInstalled) {
        e.base = e.last;
        units.push_back(Unit{0, id});
      } else if (e.state == State::kPendingRemove) {
        if (e.replaced_by) entries.at(e.replaced_by).replaces = 0;
        e.replaced_by = 0;
        e.state = State::kCancelled;  // reported with its last counters
        cancelled.push_back(id);
      }
    }
    if (int err = send_all(units)) return err;
    table_lost = false;
    LOG_WARN("kernel forwarding: rebuilt nftables table netdev %s with its %zu rules",
             table.c_str(), units.size());
    return 0;
  }

  // Drops from units [from, end) what a rebuild made moot.
  void refilter(std::vector<Unit>& units, size_t from) {
    for (size_t k = from; k < units.size(); ++k) {
      Unit& u = units[k];
      if (u.remove && entries.at(u.remove).state != State::kPendingRemove) u.remove = 0;
      if (u.add && entries.at(u.add).state != State::kPendingAdd) u.add = 0;
    }
    units.erase(std::remove_if(units.begin() + static_cast<std::ptrdiff_t>(from), units.end(),
                               [](const Unit& u) { return u.elements() == 0; }),
                units.end());
  }

  // Appends one element message per map for units [begin, end): deletions
  // first, then additions.
  bool put_units(const std::vector<Unit>& units, size_t begin, size_t end) {
    bool removes[2] = {false, false};
    bool adds[2] = {false, false};
    auto map_of = [&](uint32_t id) { return entries.at(id).key.saddr.is_v4() ? 0 : 1; };
    for (size_t i = begin; i < end; ++i) {
      if (units[i].remove) removes[map_of(units[i].remove)] = true;
      if (units[i].add) adds[map_of(units[i].add)] = true;
    }
    auto put = [&](uint16_t type, uint16_t flags, const char* set, auto&& each) {
      nlmsghdr* nlh = batch.add(type, flags);
      if (!nlh) return false;
      ElementWriter w(nlh, table, set);
      for (size_t i = begin; i < end; ++i) each(w, units[i]);
      w.finish();
      batch.close(nlh);
      return true;
    };
    int map = 0;  // the map being written: deletions and additions of other maps are skipped
    auto del_key = [&](ElementWriter& w, const Unit& u) {
      if (!u.remove || map_of(u.remove) != map) return;
      const FwdKey k = key_of(entries.at(u.remove).key);
      w.add(k.bytes, k.len);
    };
    auto add_fwd = [&](ElementWriter& w, const Unit& u) {
      if (!u.add || map_of(u.add) != map) return;
      const Entry& e = entries.at(u.add);
      const FwdKey k = key_of(e.key);
      const FwdValue v = make_fwd_value(FwdTarget{relay_of(e.key.saddr.family), e.rule.to.ip,
                                                  e.rule.relay_out_port, e.rule.to.port, e.hop.via,
                                                  e.hop.ifindex});
      w.add(k.bytes, k.len, v.bytes, v.len);
    };
    constexpr uint16_t kCreate = NLM_F_CREATE | NLM_F_EXCL;
    for (map = 0; map < 2; ++map)
      if (removes[map] && !put(NFT_MSG_DELSETELEM, 0, fwd_map_of(kMapFamilies[map]), del_key))
        return false;
    for (map = 0; map < 2; ++map)
      if (adds[map] && !put(NFT_MSG_NEWSETELEM, kCreate, fwd_map_of(kMapFamilies[map]), add_fwd))
        return false;
    return true;
  }

  // One transaction for units [begin, end). 0 or errno.
  int send_units(const std::vector<Unit>& units, size_t begin, size_t end) {
    BatchError be;
    return nl.transact(
        batch, [&](Batch&) { return put_units(units, begin, end); }, be);
  }

  // Deletes one element of `set` in its own transaction; ENOENT counts as done.
  int delete_one(const char* set, const void* key, uint32_t key_len) {
    BatchError be;
    int err = nl.transact(
        batch,
        [&](Batch& b) {
          nlmsghdr* nlh = b.add(NFT_MSG_DELSETELEM, 0);
          if (!nlh) return false;
          ElementWriter w(nlh, table, set);
          w.add(key, key_len);
          w.finish();
          b.close(nlh);
          return true;
        },
        be);
    return err == ENOENT ? 0 : err;
  }

  // Deletes, element by element, whatever of rule `id`'s elements exists.
  int delete_rule_elements(uint32_t id) {
    const Entry& e = entries.at(id);
    const FwdKey k = key_of(e.key);
    return delete_one(fwd_map_of(e.key.saddr.family), k.bytes, k.len);
  }

  // Bookkeeping once `u` is in effect in the kernel; returns the removed id
  // (to report) or 0.
  uint32_t applied(const Unit& u) {
    if (u.remove) {
      Entry& e = entries.at(u.remove);
      e.state = State::kCancelled;
      e.replaced_by = 0;
      auto it = kernel_owner.find(e.key);
      if (it != kernel_owner.end() && it->second == u.remove) kernel_owner.erase(it);
    }
    if (u.add) {
      Entry& e = entries.at(u.add);
      e.state = State::kInstalled;
      e.replaces = 0;
      kernel_owner[e.key] = u.add;
      auto it = pending_owner.find(e.key);
      if (it != pending_owner.end() && it->second == u.add) pending_owner.erase(it);
    }
    return u.remove;
  }

  // `id` could not be installed: forget it (reported with zero counters).
  void drop_add(uint32_t id) {
    Entry& e = entries.at(id);
    auto it = pending_owner.find(e.key);
    if (it != pending_owner.end() && it->second == id) pending_owner.erase(it);
    e.state = State::kCancelled;
    e.last = Counters{};
  }

  void report(uint32_t id, const std::function<void(uint32_t, const Counters&)>& final_counters) {
    auto it = entries.find(id);
    if (it == entries.end()) return;
    Counters c = it->second.last;
    entries.erase(it);
    if (final_counters) final_counters(id, c);
  }

  // Retries a unit of a refused batch alone and, if the kernel still refuses
  // it because of elements we did not expect, clears the way and tries once
  // more. Returns 0, or an errno that is not about elements (stop committing).
  // Adds that cannot be installed are dropped and described in `failures`.
  int retry_unit(const Unit& u, std::vector<uint32_t>& removed, std::vector<uint32_t>& dropped,
                 std::string& failures, size_t& failed) {
    std::vector<Unit> one{u};
    int err = send_units(one, 0, 1);
    if (err == 0) {
      if (uint32_t r = applied(u)) removed.push_back(r);
      return 0;
    }
    if (!element_error(err)) return err;
    LOG_DEBUG("kernel forwarding: rule %u/%u refused (%s), clearing the way", u.remove, u.add,
              std::strerror(err));
    if (u.remove) {
      err = delete_rule_elements(u.remove);
      if (err) return err;
      applied(Unit{u.remove, 0});
      removed.push_back(u.remove);
      if (u.add) entries.at(u.add).replaces = 0;
    }
    if (!u.add) return 0;
    err = delete_rule_elements(u.add);
    if (err) return err;
    one[0] = Unit{0, u.add};
    err = send_units(one, 0, 1);
    if (err == 0) {
      applied(one[0]);
      return 0;
    }
    if (!element_error(err)) return err;
    if (failed++ == 0) {
      const Entry& e = entries.at(u.add);
      failures =
          describe_errno(err, "cannot install kernel forwarding rule " + std::to_string(u.add) +
                                  " (from " + format_ip_endpoint(e.rule.from) + " to relay port " +
                                  std::to_string(e.rule.relay_in_port) + ")");
    }
    drop_add(u.add);
    dropped.push_back(u.add);
    return 0;
  }
};

}  // namespace mp::kernel
