// Implementation of the forwarder's map elements (nft_elements.h).
#include "kernel/nft_elements.h"

#include <endian.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <netinet/in.h>

#include <cstring>

#include "kernel/nft_netlink.h"

namespace mp::kernel::detail {

nlmsghdr* build_dump_elements(char* buf, uint32_t seq, const std::string& table, const char* set) {
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, kTableFamily, NLM_F_DUMP, seq);
  mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set);
  return nlh;
}

nlmsghdr* build_element_request(char* buf, uint32_t seq) {
  return nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, kTableFamily, NLM_F_ACK, seq);
}

size_t RuleKeyHash::operator()(const RuleKey& k) const {
  // FNV-1a over the address bytes and the ports.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint8_t b) { h = (h ^ b) * 1099511628211ull; };
  mix(static_cast<uint8_t>(k.saddr.family));
  for (uint8_t b : k.saddr.bytes) mix(b);
  for (uint16_t p : {k.sport, k.dport}) {
    mix(static_cast<uint8_t>(p >> 8));
    mix(static_cast<uint8_t>(p));
  }
  return static_cast<size_t>(h);
}

namespace {

size_t address_len(IpAddress::Family family) {
  return family == IpAddress::Family::V4 ? 4 : 16;
}

IpAddress address_at(const uint8_t* bytes, IpAddress::Family family) {
  IpAddress a;
  a.family = family;
  std::memcpy(a.bytes.data(), bytes, address_len(family));
  return a;
}

// Two ports in network order at `p`.
void put_ports(uint8_t* p, uint16_t first, uint16_t second) {
  const uint16_t a = htons(first);
  const uint16_t b = htons(second);
  std::memcpy(p, &a, 2);
  std::memcpy(p + 2, &b, 2);
}

uint16_t port_at(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return ntohs(v);
}

}  // namespace

FwdKey make_fwd_key(const RuleKey& key, const IpAddress& relay) {
  FwdKey k{};
  const size_t n = address_len(key.saddr.family);
  k.len = n == 4 ? kFwdKeyLen : kFwd6KeyLen;
  std::memcpy(k.bytes, key.saddr.bytes.data(), n);
  std::memcpy(k.bytes + n, relay.bytes.data(), n);
  put_ports(k.bytes + 2 * n, key.sport, key.dport);
  return k;
}

std::optional<RuleKey> parse_fwd_key(const uint8_t* bytes, uint32_t len, IpAddress* relay) {
  if (len != kFwdKeyLen && len != kFwd6KeyLen) return std::nullopt;
  const auto family = len == kFwdKeyLen ? IpAddress::Family::V4 : IpAddress::Family::V6;
  const size_t n = address_len(family);
  RuleKey k;
  k.saddr = address_at(bytes, family);
  if (relay) *relay = address_at(bytes + n, family);
  k.sport = port_at(bytes + 2 * n);
  k.dport = port_at(bytes + 2 * n + 2);
  return k;
}

FwdValue make_fwd_value(const FwdTarget& t) {
  FwdValue v{};
  const size_t n = address_len(t.saddr.family);
  v.len = n == 4 ? kFwdValueLen : kFwd6ValueLen;
  uint8_t* p = v.bytes;
  std::memcpy(p, t.saddr.bytes.data(), n);
  std::memcpy(p + n, t.daddr.bytes.data(), n);
  put_ports(p + 2 * n, t.sport, t.dport);
  std::memcpy(p + 2 * n + 4, t.next_hop.bytes.data(), n);
  std::memcpy(p + 3 * n + 4, &t.ifindex, 4);  // host order, as fwd reads it
  return v;
}

std::optional<FwdTarget> parse_fwd_value(const uint8_t* bytes, uint32_t len) {
  if (len != kFwdValueLen && len != kFwd6ValueLen) return std::nullopt;
  const auto family = len == kFwdValueLen ? IpAddress::Family::V4 : IpAddress::Family::V6;
  const size_t n = address_len(family);
  FwdTarget t;
  t.saddr = address_at(bytes, family);
  t.daddr = address_at(bytes + n, family);
  t.sport = port_at(bytes + 2 * n);
  t.dport = port_at(bytes + 2 * n + 2);
  t.next_hop = address_at(bytes + 2 * n + 4, family);
  std::memcpy(&t.ifindex, bytes + 3 * n + 4, 4);
  return t;
}

ElementWriter::ElementWriter(nlmsghdr* nlh, const std::string& table, const char* set) : nlh_(nlh) {
  mnl_attr_put_strz(nlh_, NFTA_SET_ELEM_LIST_TABLE, table.c_str());
  mnl_attr_put_strz(nlh_, NFTA_SET_ELEM_LIST_SET, set);
  list_ = mnl_attr_nest_start(nlh_, NFTA_SET_ELEM_LIST_ELEMENTS);
}

void ElementWriter::add(const void* key, uint32_t key_len, const void* data, uint32_t data_len) {
  nlattr* elem = mnl_attr_nest_start(nlh_, NFTA_LIST_ELEM);
  nlattr* k = mnl_attr_nest_start(nlh_, NFTA_SET_ELEM_KEY);
  mnl_attr_put(nlh_, NFTA_DATA_VALUE, key_len, key);
  mnl_attr_nest_end(nlh_, k);
  if (data) {
    nlattr* d = mnl_attr_nest_start(nlh_, NFTA_SET_ELEM_DATA);
    mnl_attr_put(nlh_, NFTA_DATA_VALUE, data_len, data);
    mnl_attr_nest_end(nlh_, d);
  }
  mnl_attr_nest_end(nlh_, elem);
  ++count_;
}

size_t ElementWriter::finish() {
  mnl_attr_nest_end(nlh_, list_);
  return count_;
}

size_t ElementWriter::size() const {
  return nlh_->nlmsg_len;
}

namespace {

// Calls `f` for every attribute in [start, start + len); libmnl's
// mnl_attr_for_each* macros do not compile as C++.
template <typename F>
void each_attr(const void* start, size_t len, F&& f) {
  const char* end = static_cast<const char*>(start) + len;
  for (auto* a = static_cast<const nlattr*>(start);
       mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a)));
       a = mnl_attr_next(a))
    f(a);
}

template <typename F>
void each_nested(const nlattr* nest, F&& f) {
  each_attr(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), f);
}

// Value of an NFTA_SET_ELEM_KEY / _DATA nest.
void data_value(const nlattr* nest, const uint8_t*& value, uint32_t& len) {
  each_nested(nest, [&](const nlattr* a) {
    if (mnl_attr_get_type(a) != NFTA_DATA_VALUE) return;
    value = static_cast<const uint8_t*>(mnl_attr_get_payload(a));
    len = mnl_attr_get_payload_len(a);
  });
}

// A "counter" expression (NFTA_EXPR_NAME, NFTA_EXPR_DATA) into `view`.
void parse_expr(const nlattr* expr, ElementView& view) {
  const char* name = nullptr;
  const nlattr* data = nullptr;
  each_nested(expr, [&](const nlattr* a) {
    if (mnl_attr_get_type(a) == NFTA_EXPR_NAME && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
      name = mnl_attr_get_str(a);
    else if (mnl_attr_get_type(a) == NFTA_EXPR_DATA)
      data = a;
  });
  if (!name || !data || std::strcmp(name, "counter") != 0) return;
  each_nested(data, [&](const nlattr* a) {
    if (mnl_attr_validate(a, MNL_TYPE_U64) < 0) return;
    if (mnl_attr_get_type(a) == NFTA_COUNTER_PACKETS) {
      view.packets = be64toh(mnl_attr_get_u64(a));
      view.has_counter = true;
    } else if (mnl_attr_get_type(a) == NFTA_COUNTER_BYTES) {
      view.bytes = be64toh(mnl_attr_get_u64(a));
      view.has_counter = true;
    }
  });
}

}  // namespace

bool parse_elements(const nlmsghdr* nlh, const std::function<void(const ElementView&)>& visit) {
  if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) return false;
  bool ok = true;
  each_attr(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)),
            nlh->nlmsg_len - NLMSG_LENGTH(sizeof(nfgenmsg)), [&](const nlattr* list) {
              if (mnl_attr_get_type(list) != NFTA_SET_ELEM_LIST_ELEMENTS) return;
              each_nested(list, [&](const nlattr* elem) {
                if (mnl_attr_get_type(elem) != NFTA_LIST_ELEM) return;
                ElementView view;
                each_nested(elem, [&](const nlattr* f) {
                  switch (mnl_attr_get_type(f)) {
                    case NFTA_SET_ELEM_KEY:
                      data_value(f, view.key, view.key_len);
                      break;
                    case NFTA_SET_ELEM_DATA:
                      data_value(f, view.data, view.data_len);
                      break;
                    case NFTA_SET_ELEM_EXPR:
                      parse_expr(f, view);
                      break;
                    case NFTA_SET_ELEM_EXPRESSIONS:
                      each_nested(f, [&](const nlattr* e) {
                        if (mnl_attr_get_type(e) == NFTA_LIST_ELEM) parse_expr(e, view);
                      });
                      break;
                    default:
                      break;
                  }
                });
                if (view.key)
                  visit(view);
                else
                  ok = false;
              });
            });
  return ok;
}

}  // namespace mp::kernel::detail
