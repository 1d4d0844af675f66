// In-kernel forwarding through nftables: implementation of nft_forwarder.h.
//
// Owns the bookkeeping between rule ids and the elements that carry them in
// the kernel, the batching of changes, the route lookups that give each rule
// its way out, and the words of every error. The objects and their encoding
// live in nft_ruleset.cpp (which also describes the rule), the socket
// discipline in nft_netlink.cpp. What an operator sees
// (`nft list table netdev <name>`):
//
//   map fwd_map { type ipv4_addr . inet_service . inet_service
//                 : ipv4_addr . ipv4_addr . ipv4_addr . ipv4_addr . iface_index; counter; }
//     latched source address . source port . relay port ->
//     relay address . destination . ports (printed as an address) . next hop . interface
//   chain ingress (filter, hook ingress on every non-loopback interface):
//     packets to the relay address whose key is in fwd_map are rewritten and
//     sent out of the interface towards the next hop; anything else (a lookup
//     miss) goes on into the IP stack and to the userspace socket.
//
// Rule ids and final counters: every id add() returned is reported exactly
// once through commit()'s `final_counters` when it leaves the kernel or the
// queue: after remove(), when a later add() of the same key replaced it (the
// old element is deleted and the new one added in the same transaction, so no
// packet falls through to userspace in between), or, with zero counters, when
// it was removed or replaced before ever being committed, or could not be
// installed (commit() then also returns false and says why). Final counters
// are read in one request per chunk of removed keys (a dump when many rules
// go) just before the transaction that deletes them; packets forwarded
// between the read and the deletion (microseconds) are not counted.
//
// Errors: the kernel reports EEXIST/ENOENT/EBUSY for the whole transaction of
// a batch. Those mean the table was changed behind our back (e.g. by hand with
// nft); the rules of such a batch are then retried one by one, deleting what
// stands in the way (an element of the same key, an element already gone is
// fine). Any other error (permissions, memory, timeout) leaves the remaining
// changes queued for the next commit(). If the whole table (or a map) is
// gone, typically `nft flush ruleset` from an nftables.service reload, the
// next commit() or read_counters() that notices logs it, recreates the table
// and reinstalls every installed rule, counters continuing from the last
// values read; until then the packets of those streams reach userspace.
#include "kernel/nft_forwarder.h"

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

namespace mp::kernel {

using namespace detail;

namespace {

// Rule ids: 1..kMaxId.
constexpr uint32_t kMaxId = 0x00ffffff;

const char* object_of(uint16_t msg_type) {
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
std::string ruleset_error(const BatchError& be, const std::string& table) {
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

uint64_t key_of(Ipv4 ip, uint16_t sport, uint16_t dport) {
  return (static_cast<uint64_t>(ip.be) << 32) | (static_cast<uint64_t>(sport) << 16) | dport;
}

// The interfaces the ingress chain hooks: every non-loopback one (at most
// 256, the kernel's limit per chain), by name and index. false with `why`
// if there is none.
bool hookable_devices(RouteLookup& routes, std::vector<std::string>& devices,
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

std::string interface_name(RouteLookup& routes, uint32_t ifindex) {
  std::vector<Interface> all;
  std::string ignored;
  if (routes.interfaces(all, ignored))
    for (const Interface& i : all)
      if (i.ifindex == ifindex) return i.name;
  return "#" + std::to_string(ifindex);
}

// Errors that concern single elements of a batch (the table was changed by
// someone else) rather than the whole socket or kernel.
bool element_error(int err) {
  return err == EEXIST || err == ENOENT || err == EBUSY;
}

}  // namespace

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
    uint64_t key = 0;
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
  Ipv4 relay_ip;
  std::vector<std::string> devices;  // the ingress chain's
  std::vector<uint32_t> hooked;      // their interface indexes
  RouteLookup routes;
  Netlink nl;
  Batch batch;
  std::vector<char> request_buf = std::vector<char>(Batch::kMaxMessage + 4096);

  std::unordered_map<uint32_t, Entry> entries;
  std::unordered_map<uint64_t, uint32_t> kernel_owner;   // key -> id whose element is installed
  std::unordered_map<uint64_t, uint32_t> pending_owner;  // key -> id queued for installation
  std::vector<uint32_t> pending_adds;
  std::vector<uint32_t> pending_removes;
  std::vector<uint32_t> cancelled;
  uint32_t next_id = 1;
  std::vector<std::pair<uint32_t, Counters>> dumped;  // reused by dump_fwd(); totals
  bool table_lost = false;  // deleted behind our back; commit() rebuilds it
  bool keep_table = false;  // keep_table_on_exit()

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

  // The rule installed in the kernel whose fwd_map element is `v` (its id in
  // `id`), or nullptr for elements that are not ours.
  Entry* entry_of(const ElementView& v, uint32_t& id) {
    Ipv4 ip;
    uint16_t sport, dport;
    if (!parse_fwd_key(v.key, v.key_len, ip, sport, dport)) return nullptr;
    auto owner = kernel_owner.find(key_of(ip, sport, dport));
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

  // One dump of fwd_map into `dumped` (id, counters) for known ids. 0 or errno.
  int dump_fwd() {
    int err = EINTR;
    for (int attempt = 0; attempt < 3 && err == EINTR; ++attempt) {
      dumped.clear();
      nlmsghdr* req = build_dump_elements(request_buf.data(), nl.take_seq(), table, kFwdMap);
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
      for (size_t i = 0; i < ids.size() && err == 0; i += chunk) {
        nlmsghdr* req = build_element_request(request_buf.data(), nl.take_seq());
        ElementWriter w(req, table, kFwdMap);
        for (size_t j = i; j < ids.size() && j < i + chunk; ++j) {
          const Entry& e = entries.at(ids[j]);
          FwdKey k = make_fwd_key(e.rule.from.ip, e.rule.from.port, e.rule.relay_in_port);
          w.add(k.bytes, sizeof k.bytes);
        }
        w.finish();
        err = nl.request(req, [&](const nlmsghdr* nlh) {
          parse_elements(nlh, [&](const ElementView& v) {
            uint32_t id;
            if (Entry* e = entry_of(v, id)) take(*e, v);
          });
        });
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
    nlmsghdr* req = build_get_set(request_buf.data(), nl.take_seq(), table, kFwdMap);
    return nl.request(req, [](const nlmsghdr*) {}) != ENOENT;
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
            batch, [&](Batch& b) { return put_ruleset(b, table, relay_ip, devices); }, be))
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
  // first, then additions with fwd_map last.
  bool put_units(const std::vector<Unit>& units, size_t begin, size_t end) {
    bool removes = false;
    bool adds = false;
    for (size_t i = begin; i < end; ++i) {
      removes = removes || units[i].remove;
      adds = adds || units[i].add;
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
    auto del_key = [&](ElementWriter& w, const Unit& u) {
      if (!u.remove) return;
      const Entry& e = entries.at(u.remove);
      FwdKey k = make_fwd_key(e.rule.from.ip, e.rule.from.port, e.rule.relay_in_port);
      w.add(k.bytes, sizeof k.bytes);
    };
    auto add_fwd = [&](ElementWriter& w, const Unit& u) {
      if (!u.add) return;
      const Entry& e = entries.at(u.add);
      FwdKey k = make_fwd_key(e.rule.from.ip, e.rule.from.port, e.rule.relay_in_port);
      FwdValue v = make_fwd_value(relay_ip, e.rule.to.ip, e.rule.relay_out_port, e.rule.to.port,
                                  e.hop.via, e.hop.ifindex);
      w.add(k.bytes, sizeof k.bytes, v.bytes, sizeof v.bytes);
    };
    constexpr uint16_t kCreate = NLM_F_CREATE | NLM_F_EXCL;
    if (removes && !put(NFT_MSG_DELSETELEM, 0, kFwdMap, del_key)) return false;
    if (adds && !put(NFT_MSG_NEWSETELEM, kCreate, kFwdMap, add_fwd)) return false;
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
    FwdKey k = make_fwd_key(e.rule.from.ip, e.rule.from.port, e.rule.relay_in_port);
    return delete_one(kFwdMap, k.bytes, sizeof k.bytes);
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
                                  " (from " + format_endpoint(e.rule.from) + " to relay port " +
                                  std::to_string(e.rule.relay_in_port) + ")");
    }
    drop_add(u.add);
    dropped.push_back(u.add);
    return 0;
  }
};

NftForwarder::NftForwarder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

bool NftForwarder::probe(std::string& why) {
  Netlink nl;
  if (int err = nl.open()) {
    why = describe_errno(err, "cannot open a netlink socket to nf_tables");
    return false;
  }
  static std::atomic<unsigned> counter{0};
  std::string name =
      "mediaproxy_probe_" + std::to_string(getpid()) + "_" + std::to_string(counter.fetch_add(1));
  RouteLookup routes;
  std::vector<std::string> devices;
  std::vector<uint32_t> hooked;
  if (!routes.open(why) || !hookable_devices(routes, devices, hooked, why)) return false;
  Batch batch;
  BatchError be;
  if (nl.transact(
          batch, [&](Batch& b) { return put_ruleset(b, name, Ipv4{}, devices); }, be) != 0) {
    why = ruleset_error(be, name);
    return false;
  }
  if (nl.transact(
          batch, [&](Batch& b) { return put_delete_table(b, name); }, be) != 0) {
    why = describe_errno(be.err, "cannot delete the scratch nftables table netdev " + name +
                                     " (delete it by hand: nft delete table netdev " + name + ")");
    return false;
  }
  return true;
}

bool NftForwarder::open_impl(Impl& im, const std::string& table_name, Ipv4 relay_ip,
                             std::string& error) {
  if (std::string why = check_nft_table_name(table_name); !why.empty()) {
    error = "invalid nftables table name: " + why;
    return false;
  }
  if (relay_ip.is_any()) {
    error = "kernel forwarding needs the relay's own IPv4 address, not 0.0.0.0";
    return false;
  }
  im.table = table_name;
  im.relay_ip = relay_ip;
  if (int err = im.nl.open()) {
    error = describe_errno(err, "cannot open a netlink socket to nf_tables");
    return false;
  }
  if (!im.routes.open(error) || !hookable_devices(im.routes, im.devices, im.hooked, error))
    return false;
  std::string watch_error;
  if (!im.routes.watch(watch_error))
    LOG_WARN(
        "kernel forwarding: %s; route changes reach kernel-forwarded streams only when "
        "they are handed over again",
        watch_error.c_str());
  return true;
}

NftForwarder::Existing NftForwarder::existing_table(Impl& im, Ipv4& owner, std::string& error) {
  nlmsghdr* req = build_get_table(im.request_buf.data(), im.nl.take_seq(), im.table);
  std::string comment;
  bool parsed = false;
  const int err =
      im.nl.request(req, [&](const nlmsghdr* nlh) { parsed = parse_table_comment(nlh, comment); });
  if (err == ENOENT) return Existing::None;
  if (err != 0) {
    error = describe_errno(err, "cannot read nftables table netdev " + im.table);
    return Existing::Error;
  }
  const auto who = parsed ? table_owner(comment) : std::nullopt;
  if (!who) return Existing::Unknown;
  owner = *who;
  if (owner == im.relay_ip) return Existing::Ours;
  error = "nftables table netdev " + im.table + " belongs to the relay at " + format_ipv4(owner) +
          " (its comment says so), another mediaproxy instance on this host; it is left alone: "
          "set a different nft_table for the relay at " +
          format_ipv4(im.relay_ip);
  return Existing::Foreign;
}

bool NftForwarder::install_ruleset(Impl& im, bool stale, std::string& error) {
  BatchError be;
  if (im.nl.transact(
          im.batch, [&](Batch& b) { return put_ruleset(b, im.table, im.relay_ip, im.devices); },
          be) != 0) {
    error = ruleset_error(be, im.table);
    return false;
  }
  if (stale)
    LOG_WARN(
        "kernel forwarding: nftables table netdev %s already existed (left by an instance of this "
        "relay that did not exit cleanly, or of an older version); deleted and recreated",
        im.table.c_str());
  std::string names;
  for (const auto& d : im.devices) names += (names.empty() ? "" : ", ") + d;
  LOG_INFO(
      "kernel forwarding: created nftables table netdev %s for relay address %s, hooked on %s "
      "(new interfaces are hooked when they appear)",
      im.table.c_str(), format_ipv4(im.relay_ip).c_str(), names.c_str());
  return true;
}

std::unique_ptr<NftForwarder> NftForwarder::create(const std::string& table_name, Ipv4 relay_ip,
                                                   std::string& error) {
  auto impl = std::make_unique<Impl>();
  if (!open_impl(*impl, table_name, relay_ip, error)) return nullptr;
  Ipv4 owner;
  const Existing found = existing_table(*impl, owner, error);
  if (found == Existing::Foreign || found == Existing::Error) return nullptr;
  if (!install_ruleset(*impl, found != Existing::None, error)) return nullptr;
  return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
}

void NftForwarder::keep_table_on_exit(bool keep) {
  impl_->keep_table = keep;
}

NftForwarder::~NftForwarder() {
  if (!impl_) return;
  Impl& im = *impl_;
  if (im.keep_table) {
    LOG_INFO("kernel forwarding: nftables table netdev %s left in place with %zu rule(s)",
             im.table.c_str(), im.kernel_owner.size());
    return;
  }
  BatchError be;
  int err = im.nl.transact(
      im.batch, [&](Batch& b) { return put_delete_table(b, im.table); }, be);
  if (err == 0)
    LOG_INFO("kernel forwarding: deleted nftables table netdev %s", im.table.c_str());
  else if (err != ENOENT)
    LOG_ERROR("%s", describe_errno(
                        err, "kernel forwarding: cannot delete nftables table netdev " + im.table +
                                 " (delete it by hand: nft delete table netdev " + im.table + ")")
                        .c_str());
}

uint32_t NftForwarder::add(const ForwardRule& rule, std::string* why) {
  Impl& im = *impl_;
  NextHop hop;
  std::string reason;
  if (!im.routes.resolve(im.relay_ip, rule.to.ip, hop, reason)) {
    if (why) *why = "cannot send to " + format_ipv4(rule.to.ip) + " from the kernel: " + reason;
    return 0;
  }
  if (std::find(im.hooked.begin(), im.hooked.end(), hop.ifindex) == im.hooked.end()) {
    if (why)
      *why = "the route to " + format_ipv4(rule.to.ip) + " leaves through interface " +
             interface_name(im.routes, hop.ifindex) +
             ", which did not exist when forwarding started and is not hooked (yet)";
    return 0;
  }
  uint32_t id = im.alloc_id();
  if (id == 0) {
    LOG_ERROR("kernel forwarding: no free rule id (%u rules live)", kMaxId);
    return 0;
  }
  Impl::Entry e;
  e.rule = rule;
  e.hop = hop;
  e.key = key_of(rule.from.ip, rule.from.port, rule.relay_in_port);
  // An earlier add of the same key not yet committed never reaches the kernel.
  if (auto it = im.pending_owner.find(e.key); it != im.pending_owner.end()) {
    uint32_t old = it->second;
    im.entries.at(old).state = Impl::State::kCancelled;
    im.cancelled.push_back(old);
  }
  // The element installed for this key is deleted in the transaction that adds this one.
  if (auto it = im.kernel_owner.find(e.key); it != im.kernel_owner.end()) {
    Impl::Entry& installed = im.entries.at(it->second);
    installed.state = Impl::State::kPendingRemove;
    installed.replaced_by = id;
    e.replaces = it->second;
  }
  im.pending_owner[e.key] = id;
  im.entries.emplace(id, e);
  im.pending_adds.push_back(id);
  return id;
}

void NftForwarder::remove(uint32_t id) {
  Impl& im = *impl_;
  Impl::Entry* e = im.find(id);
  if (!e) return;
  switch (e->state) {
    case Impl::State::kPendingAdd: {
      auto it = im.pending_owner.find(e->key);
      if (it != im.pending_owner.end() && it->second == id) im.pending_owner.erase(it);
      if (e->replaces) {
        // The rule it was to replace goes anyway, on its own.
        im.entries.at(e->replaces).replaced_by = 0;
        im.pending_removes.push_back(e->replaces);
      }
      e->state = Impl::State::kCancelled;
      im.cancelled.push_back(id);
      break;
    }
    case Impl::State::kInstalled:
      e->state = Impl::State::kPendingRemove;
      im.pending_removes.push_back(id);
      break;
    case Impl::State::kPendingRemove:
    case Impl::State::kCancelled:
      break;
  }
}

bool NftForwarder::commit(const std::function<void(uint32_t id, const Counters&)>& final_counters,
                          std::string& error) {
  Impl& im = *impl_;
  using Unit = Impl::Unit;
  using State = Impl::State;
  error.clear();
  int fatal = im.table_lost ? im.rebuild() : 0;

  // Work queued so far; callbacks below may queue more.
  std::vector<uint32_t> removes = std::move(im.pending_removes);
  std::vector<uint32_t> adds = std::move(im.pending_adds);
  std::vector<uint32_t> cancelled = std::move(im.cancelled);
  im.pending_removes.clear();
  im.pending_adds.clear();
  im.cancelled.clear();
  std::sort(removes.begin(), removes.end());
  removes.erase(std::unique(removes.begin(), removes.end()), removes.end());

  std::vector<Unit> units;
  for (uint32_t id : removes) {
    const Impl::Entry* e = im.find(id);
    if (e && e->state == State::kPendingRemove && !e->replaced_by) units.push_back(Unit{id, 0});
  }
  for (uint32_t id : adds) {
    const Impl::Entry* e = im.find(id);
    if (e && e->state == State::kPendingAdd) units.push_back(Unit{e->replaces, id});
  }
  if (!fatal) {
    std::vector<uint32_t> deleting;
    for (const Unit& u : units)
      if (u.remove) deleting.push_back(u.remove);
    if (im.lost_table(im.read_final(deleting))) {
      fatal = im.rebuild();
      im.refilter(units, 0);
    }
  }

  std::vector<uint32_t> removed;
  std::vector<uint32_t> dropped;
  std::string failures;
  size_t failed = 0;
  size_t i = 0;
  while (i < units.size() && !fatal) {
    size_t j = i;
    size_t n = 0;
    while (j < units.size() && n + units[j].elements() <= kMaxBatchElements)
      n += units[j++].elements();
    int err = im.send_units(units, i, j);
    if (err == 0) {
      for (; i < j; ++i)
        if (uint32_t r = im.applied(units[i])) removed.push_back(r);
    } else if (im.lost_table(err)) {
      fatal = im.rebuild();
      im.refilter(units, i);
    } else if (element_error(err)) {
      LOG_WARN(
          "kernel forwarding: the kernel refused a batch of %zu rule changes (%s): nftables "
          "table netdev %s was changed by someone else; retrying rule by rule",
          j - i, std::strerror(err), im.table.c_str());
      for (; i < j && !fatal; ++i) {
        fatal = im.retry_unit(units[i], removed, dropped, failures, failed);
        if (fatal) break;
      }
    } else {
      fatal = err;
    }
  }
  if (fatal) {
    // Keep what was not done queued for the next commit().
    for (size_t k = i; k < units.size(); ++k) {
      const Unit& u = units[k];
      if (u.add && im.entries.at(u.add).state == State::kPendingAdd)
        im.pending_adds.push_back(u.add);
      else if (u.remove && im.entries.at(u.remove).state == State::kPendingRemove)
        im.pending_removes.push_back(u.remove);
    }
    error = describe_errno(fatal, "kernel forwarding: cannot update nftables table netdev " +
                                      im.table + " (" + std::to_string(units.size() - i) +
                                      " rule changes stay queued)");
  } else if (failed) {
    error = failures;
    if (failed > 1) error += " (and " + std::to_string(failed - 1) + " more rules)";
  }

  // Reported last, with no reference into the tables held: the callback may
  // queue new changes. `late`: rules whose deletion a rebuild made moot.
  std::vector<uint32_t> late = std::move(im.cancelled);
  im.cancelled.clear();
  for (const auto* list : {&cancelled, &removed, &dropped, &late})
    for (uint32_t id : *list) im.report(id, final_counters);
  return error.empty();
}

bool NftForwarder::read_counters(const std::function<void(uint32_t id, const Counters&)>& visit,
                                 std::string& error) {
  Impl& im = *impl_;
  int err = im.table_lost ? ENOENT : im.dump_fwd();
  if (err && (im.table_lost || im.lost_table(err))) {
    err = im.rebuild();
    if (err == 0) err = im.dump_fwd();
  }
  if (err) {
    error = describe_errno(
        err, "kernel forwarding: cannot read counters of nftables table netdev " + im.table);
    return false;
  }
  error.clear();
  if (visit)
    for (const auto& [id, c] : im.dumped) visit(id, c);
  return true;
}

int NftForwarder::network_change_fd() const {
  return impl_->routes.watch_fd();
}

bool NftForwarder::follow_network(size_t& moved, std::string& error) {
  Impl& im = *impl_;
  moved = 0;
  error.clear();
  if (!im.routes.drain_changes()) return true;

  // New interfaces: hook them (the chain keeps its existing hooks).
  std::vector<std::string> now;
  std::vector<uint32_t> now_index;
  std::string why;
  if (hookable_devices(im.routes, now, now_index, why)) {
    std::vector<std::string> added;
    for (const auto& d : now)
      if (std::find(im.devices.begin(), im.devices.end(), d) == im.devices.end())
        added.push_back(d);
    if (!added.empty()) {
      std::vector<std::string> all = im.devices;
      all.insert(all.end(), added.begin(), added.end());
      BatchError be;
      if (int err = im.nl.transact(
              im.batch, [&](Batch& b) { return put_ingress_devices(b, im.table, all); }, be)) {
        LOG_WARN("%s", describe_errno(err, "kernel forwarding: cannot hook new interface(s) " +
                                               added.front() +
                                               "...; their streams stay in "
                                               "userspace")
                           .c_str());
      } else {
        im.devices = all;
        im.hooked = now_index;
        LOG_INFO("kernel forwarding: hooked new interface(s): %s (and %zu more)",
                 added.front().c_str(), added.size() - 1);
      }
    }
  }

  // Rules whose way out changed.
  std::vector<uint32_t> ids;
  std::vector<NextHop> hops;
  for (auto& [id, e] : im.entries) {
    if (e.state != Impl::State::kInstalled) continue;
    NextHop hop;
    std::string reason;
    // No route any more: keep the old way out, userspace could not do better.
    if (!im.routes.resolve(im.relay_ip, e.rule.to.ip, hop, reason)) continue;
    if (hop.ifindex == e.hop.ifindex && hop.via == e.hop.via) continue;
    ids.push_back(id);
    hops.push_back(hop);
  }
  if (ids.empty()) return true;
  // Counters so far, then delete and re-add each element with its new value
  // in one transaction per batch; the new elements count on from there.
  im.read_final(ids);
  // Each move is a unit that deletes and re-adds the same id's element.
  for (size_t i = 0; i < ids.size(); i += kMaxBatchElements / 2) {
    const size_t end = std::min(ids.size(), i + kMaxBatchElements / 2);
    std::vector<Impl::Unit> units;
    std::vector<NextHop> old_hops;
    for (size_t j = i; j < end; ++j) {
      Impl::Entry& e = im.entries.at(ids[j]);
      old_hops.push_back(e.hop);
      e.hop = hops[j];  // what put_units() writes
      units.push_back(Impl::Unit{ids[j], ids[j]});
    }
    if (int err = im.send_units(units, 0, units.size())) {
      for (size_t j = i; j < end; ++j) im.entries.at(ids[j]).hop = old_hops[j - i];
      error =
          describe_errno(err, "kernel forwarding: cannot move " + std::to_string(ids.size() - i) +
                                  " rules to their new routes in table netdev " + im.table);
      if (im.lost_table(err)) im.rebuild();
      return false;
    }
    for (size_t j = i; j < end; ++j) {
      Impl::Entry& e = im.entries.at(ids[j]);
      e.base = e.last;
      ++moved;
    }
  }
  return true;
}

size_t NftForwarder::installed() const {
  return impl_->kernel_owner.size();
}

const std::string& NftForwarder::table_name() const {
  return impl_->table;
}

// ---- adoption after a restart --------------------------------------------

// Registers every element of the table's fwd_map as an installed rule.
// false (with `error`) if the map cannot be read or holds an element that is
// not one of ours; the caller then replaces the table.
bool NftForwarder::adopt_elements(Impl& im, std::vector<AdoptedRule>& adopted, std::string& error) {
  adopted.clear();
  std::vector<std::pair<Impl::Entry, Counters>> found;
  bool malformed = false;
  nlmsghdr* req = build_dump_elements(im.request_buf.data(), im.nl.take_seq(), im.table, kFwdMap);
  const int err = im.nl.request(req, [&](const nlmsghdr* nlh) {
    if (!parse_elements(nlh, [&](const ElementView& v) {
          Impl::Entry e;
          Ipv4 saddr, next_hop;
          uint16_t sport, dport, out_port, to_port;
          uint32_t ifindex;
          if (!parse_fwd_key(v.key, v.key_len, e.rule.from.ip, sport, dport) || !v.data ||
              !v.has_counter ||
              !parse_fwd_value(v.data, v.data_len, saddr, e.rule.to.ip, out_port, to_port, next_hop,
                               ifindex) ||
              saddr != im.relay_ip) {
            malformed = true;
            return;
          }
          e.rule.from.port = sport;
          e.rule.relay_in_port = dport;
          e.rule.relay_out_port = out_port;
          e.rule.to.port = to_port;
          e.hop.via = next_hop;
          e.hop.ifindex = ifindex;
          e.key = key_of(e.rule.from.ip, sport, dport);
          e.state = Impl::State::kInstalled;
          found.emplace_back(e, Counters{v.packets, v.bytes});
        }))
      malformed = true;
  });
  if (err != 0 || malformed) {
    error = err ? describe_errno(err, "cannot read its map") : "its map holds foreign elements";
    return false;
  }
  for (auto& [e, c] : found) {
    const uint32_t id = im.alloc_id();
    if (id == 0) break;
    e.last = c;
    im.kernel_owner[e.key] = id;
    im.entries.emplace(id, e);
    adopted.push_back(AdoptedRule{id, e.rule, c});
  }
  // Interfaces that appeared while no process ran get the chain's hook too.
  BatchError be;
  if (int hook_err = im.nl.transact(
          im.batch, [&](Batch& b) { return put_ingress_devices(b, im.table, im.devices); }, be)) {
    error = describe_errno(hook_err, "cannot hook its chain on the interfaces");
    return false;
  }
  return true;
}

std::unique_ptr<NftForwarder> NftForwarder::adopt(const std::string& table_name, Ipv4 relay_ip,
                                                  std::vector<AdoptedRule>& adopted,
                                                  std::string& error) {
  adopted.clear();
  auto impl = std::make_unique<Impl>();
  if (!open_impl(*impl, table_name, relay_ip, error)) return nullptr;
  Ipv4 owner;
  const Existing found = existing_table(*impl, owner, error);
  if (found == Existing::Foreign || found == Existing::Error) return nullptr;
  if (found == Existing::Ours) {
    std::string why;
    if (adopt_elements(*impl, adopted, why)) {
      LOG_INFO("kernel forwarding: adopted nftables table netdev %s with %zu rule(s)",
               table_name.c_str(), adopted.size());
      return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
    }
    LOG_WARN("kernel forwarding: the nftables table netdev %s left behind cannot be adopted (%s)",
             table_name.c_str(), why.c_str());
    adopted.clear();
    impl->entries.clear();
    impl->kernel_owner.clear();
  }
  if (!install_ruleset(*impl, found != Existing::None, error)) return nullptr;
  return std::unique_ptr<NftForwarder>(new NftForwarder(std::move(impl)));
}

}  // namespace mp::kernel
