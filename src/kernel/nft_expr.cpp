// Implementation of the shared nftables builders (nft_expr.h).
#include "kernel/nft_expr.h"

#include <netinet/in.h>
// After netinet/in.h, which linux/netfilter.h's linux/in.h would clash with.
#include <linux/netfilter.h>
#include <linux/netlink.h>

namespace mp::kernel::detail {

nftnl_expr* payload_load(uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg) {
  nftnl_expr* e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
  return e;
}

nftnl_expr* cmp(uint32_t op, const void* data, uint32_t len) {
  nftnl_expr* e = nftnl_expr_alloc("cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  return e;
}

nftnl_expr* meta_load(uint32_t key) {
  nftnl_expr* e = nftnl_expr_alloc("meta");
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
  return e;
}

nftnl_expr* immediate(uint32_t dreg, const void* data, uint32_t len) {
  nftnl_expr* e = nftnl_expr_alloc("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, dreg);
  nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, data, len);
  return e;
}

void add_ipv4_udp_unfragmented(nftnl_rule* r) {
  nftnl_rule_add_expr(r, payload_load(NFT_PAYLOAD_NETWORK_HEADER, 6, 4));
  nftnl_expr* bw = nftnl_expr_alloc("bitwise");
  const uint8_t mask[4] = {0x3f, 0xff, 0x00, 0xff};
  const uint8_t zero[4] = {0, 0, 0, 0};
  const uint8_t udp_unfragmented[4] = {0, 0, 0, IPPROTO_UDP};
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
  nftnl_expr_set_u32(bw, NFTNL_EXPR_BITWISE_LEN, 4);
  nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_MASK, mask, 4);
  nftnl_expr_set(bw, NFTNL_EXPR_BITWISE_XOR, zero, 4);
  nftnl_rule_add_expr(r, bw);
  nftnl_rule_add_expr(r, cmp_eq(udp_unfragmented, 4));
}

bool put_table(Batch& batch, uint16_t type, uint16_t flags, const std::string& name,
               const std::string& comment, uint16_t family) {
  Table t(nftnl_table_alloc());
  nftnl_table_set_str(t.p, NFTNL_TABLE_NAME, name.c_str());
  Udata ud(nftnl_udata_buf_alloc(256));
  if (!comment.empty()) {
    nftnl_table_set_u32(t.p, NFTNL_TABLE_FLAGS, 0);
    nftnl_udata_put_strz(ud.p, NFTNL_UDATA_TABLE_COMMENT, comment.c_str());
    nftnl_table_set_data(t.p, NFTNL_TABLE_USERDATA, nftnl_udata_buf_data(ud.p),
                         nftnl_udata_buf_len(ud.p));
  }
  nlmsghdr* nlh = batch.add(type, flags, family);
  if (!nlh) return false;
  nftnl_table_nlmsg_build_payload(nlh, t.p);
  batch.close(nlh);
  return true;
}

bool put_base_chain(Batch& batch, const std::string& table, const char* name, uint32_t hook,
                    int32_t prio, uint16_t family, const std::vector<std::string>& devices) {
  Chain c(nftnl_chain_alloc());
  nftnl_chain_set_str(c.p, NFTNL_CHAIN_TABLE, table.c_str());
  nftnl_chain_set_str(c.p, NFTNL_CHAIN_NAME, name);
  nftnl_chain_set_str(c.p, NFTNL_CHAIN_TYPE, "filter");
  nftnl_chain_set_u32(c.p, NFTNL_CHAIN_HOOKNUM, hook);
  nftnl_chain_set_s32(c.p, NFTNL_CHAIN_PRIO, prio);
  nftnl_chain_set_u32(c.p, NFTNL_CHAIN_POLICY, NF_ACCEPT);
  std::vector<const char*> names;
  if (family == NFPROTO_NETDEV) {
    for (const auto& d : devices) names.push_back(d.c_str());
    names.push_back(nullptr);
    nftnl_chain_set_data(c.p, NFTNL_CHAIN_DEVICES, names.data(), 0);
  }
  nlmsghdr* nlh = batch.add(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family);
  if (!nlh) return false;
  nftnl_chain_nlmsg_build_payload(nlh, c.p);
  batch.close(nlh);
  return true;
}

bool put_rule(Batch& batch, nftnl_rule* r, uint16_t family) {
  nlmsghdr* nlh = batch.add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family);
  if (!nlh) return false;
  nftnl_rule_nlmsg_build_payload(nlh, r);
  batch.close(nlh);
  return true;
}

}  // namespace mp::kernel::detail
