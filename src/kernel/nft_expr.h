// Builders of the nftables messages and rule expressions that both of the
// relay's tables use: the forwarder's netdev table (nft_ruleset.cpp) and the
// tproxy table of media_receive (nft_tproxy.cpp). Each returns an object
// libnftnl allocated: an expression belongs to the rule it is added to, the
// Owned wrappers free the rest. Registers are NFT_REG_1 unless named.
#pragma once

#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter/nf_tables.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernel/nft_netlink.h"

namespace mp::kernel::detail {

template <typename T, void (*Free)(const T*)>
struct Owned {
  T* p;
  explicit Owned(T* x) : p(x) {}
  ~Owned() {
    if (p) Free(p);
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
};
using Table = Owned<nftnl_table, nftnl_table_free>;
using Chain = Owned<nftnl_chain, nftnl_chain_free>;
using Set = Owned<nftnl_set, nftnl_set_free>;
using Rule = Owned<nftnl_rule, nftnl_rule_free>;
using Udata = Owned<nftnl_udata_buf, nftnl_udata_buf_free>;

// `len` bytes at `offset` of header `base` (NFT_PAYLOAD_*) into `dreg`.
nftnl_expr* payload_load(uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg = NFT_REG_1);
// Register 1 compared with `data` by `op` (NFT_CMP_*); a mismatch ends the rule.
nftnl_expr* cmp(uint32_t op, const void* data, uint32_t len);
inline nftnl_expr* cmp_eq(const void* data, uint32_t len) {
  return cmp(NFT_CMP_EQ, data, len);
}
// Packet metadata `key` (NFT_META_*) into register 1.
nftnl_expr* meta_load(uint32_t key);
// `data` into `dreg`.
nftnl_expr* immediate(uint32_t dreg, const void* data, uint32_t len);
// "UDP, not a fragment" for an IPv4 packet, as one compare over header bytes
// 6..9 (flags and fragment offset, TTL, protocol): the more-fragments flag
// and the offset must be 0 (fragments go to the IP stack: only it can
// reassemble them, and later fragments carry no UDP header to match), the
// TTL is ignored. Adds load, bitwise and compare to `r` (register 1).
void add_ipv4_udp_unfragmented(nftnl_rule* r);

// A NEWTABLE or DELTABLE message (`type`) for table `name` of `family`, with
// `comment` when not empty. False when the batch has no room.
bool put_table(Batch& batch, uint16_t type, uint16_t flags, const std::string& name,
               const std::string& comment, uint16_t family);
// A NEWCHAIN message for base chain `name` of `table` (type filter, policy
// accept) on hook `hook` at priority `prio`; a netdev chain is bound to
// `devices`, others take none.
bool put_base_chain(Batch& batch, const std::string& table, const char* name, uint32_t hook,
                    int32_t prio, uint16_t family, const std::vector<std::string>& devices = {});
// A NEWRULE message appending `r` (table and chain set) to its chain.
bool put_rule(Batch& batch, nftnl_rule* r, uint16_t family);

}  // namespace mp::kernel::detail
