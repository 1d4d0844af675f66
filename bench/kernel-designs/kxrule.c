// kxrule: append a one-lookup rule (not expressible in nft 1.0.6 syntax) to an existing table/chain/set.
//   kxrule ip1 <relay-ip>   table ip kx, chain prerouting, map fwd (data mark.daddr.sport.dport)
//   kxrule nd1 <relay-ip>   table netdev kx, chain in, map fwd (data daddr.sport.dport.nexthop.oif)
//   kxrule nd1t <relay-ip>  same + ip ttl set 64 (constant)
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/common.h>
#include <libnftnl/batch.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct nftnl_expr* pl(uint32_t base, uint32_t off, uint32_t len, uint32_t dreg) {
  struct nftnl_expr* e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, off);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
  return e;
}
static struct nftnl_expr* pw(uint32_t sreg, uint32_t base, uint32_t off, uint32_t len, int addr) {
  struct nftnl_expr* e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, off);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_CSUM_TYPE, addr ? NFT_PAYLOAD_CSUM_INET : NFT_PAYLOAD_CSUM_NONE);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_CSUM_OFFSET, addr ? 10 : 0);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_FLAGS, NFT_PAYLOAD_L4CSUM_PSEUDOHDR);
  return e;
}
// ttl write: IP header checksum only
static struct nftnl_expr* pw_ttl(uint32_t sreg) {
  struct nftnl_expr* e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, 8);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, 1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_CSUM_TYPE, NFT_PAYLOAD_CSUM_INET);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_CSUM_OFFSET, 10);
  return e;
}
static struct nftnl_expr* cmp(uint32_t sreg, const void* d, uint32_t len) {
  struct nftnl_expr* e = nftnl_expr_alloc("cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, d, len);
  return e;
}
static struct nftnl_expr* meta(uint32_t key, uint32_t dreg) {
  struct nftnl_expr* e = nftnl_expr_alloc("meta");
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
  return e;
}
static struct nftnl_expr* lk(const char* set, uint32_t sreg, uint32_t dreg) {
  struct nftnl_expr* e = nftnl_expr_alloc("lookup");
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, dreg);
  nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set);
  return e;
}
// reg 1 = reg 1 & mask (xor 0: `zero`, len bytes of zeros)
static struct nftnl_expr* and_mask(const void* mask, const void* zero, uint32_t len) {
  struct nftnl_expr* e = nftnl_expr_alloc("bitwise");
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
  nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask, len);
  nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, zero, len);
  return e;
}
// the 12 bytes of destination and source MAC from register sreg
static struct nftnl_expr* ll_write(uint32_t sreg) {
  struct nftnl_expr* e = nftnl_expr_alloc("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_LL_HEADER);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, 0);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, 12);
  return e;
}
static struct nftnl_expr* imm(uint32_t dreg, const void* d, uint32_t len) {
  struct nftnl_expr* e = nftnl_expr_alloc("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, dreg);
  nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, d, len);
  return e;
}

int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: kxrule ip1|nd1|nd1t RELAY_IP\n"); return 2; }
  const char* v = argv[1];
  uint32_t relay;
  inet_pton(AF_INET, argv[2], &relay);
  int nd = v[0] == 'n';
  struct nftnl_rule* r = nftnl_rule_alloc();
  nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, nd ? NFPROTO_NETDEV : NFPROTO_IPV4);
  nftnl_rule_set_str(r, NFTNL_RULE_TABLE, "kx");
  nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, nd ? "in" : "prerouting");
  uint8_t udp = 17;
  if (nd) {
    uint16_t ethip = htons(0x0800);
    nftnl_rule_add_expr(r, meta(NFT_META_PROTOCOL, NFT_REG_1));
    nftnl_rule_add_expr(r, cmp(NFT_REG_1, &ethip, 2));
  }
  if (!strncmp(v, "nd2k", 4)) {
    // one 4-byte check for "not a fragment (MF flag and offset 0), UDP": flags/offset, TTL
    // (ignored), protocol; then the key saddr . daddr . sport|dport from two loads
    uint8_t mask[4] = {0x3f, 0xff, 0x00, 0xff}, want[4] = {0, 0, 0, 17}, zero[4] = {0};
    nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_NETWORK_HEADER, 6, 4, NFT_REG_1));
    nftnl_rule_add_expr(r, and_mask(mask, zero, 4));
    nftnl_rule_add_expr(r, cmp(NFT_REG_1, want, 4));
    nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_NETWORK_HEADER, 12, 8, NFT_REG32_00));
    nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, NFT_REG32_02));
    nftnl_rule_add_expr(r, lk("fwdm", NFT_REG32_00, NFT_REG32_00));
    nftnl_rule_add_expr(r, pw(NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, 0));
    nftnl_rule_add_expr(r, pw(NFT_REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 12, 8, 1));
    struct nftnl_expr* f = nftnl_expr_alloc("fwd");
    if (!strcmp(v, "nd2ke")) {
      // regs: 00 saddr, 01 daddr, 02 ports, 03..05 destination and source MAC, 06 oif
      nftnl_rule_add_expr(r, ll_write(NFT_REG32_03));
      nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG32_06);
    } else {
      nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG32_04);
      nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_ADDR, NFT_REG32_03);
      nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_NFPROTO, NFPROTO_IPV4);
    }
    nftnl_rule_add_expr(r, f);
    goto send;
  }
  nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG_1));
  nftnl_rule_add_expr(r, cmp(NFT_REG_1, &relay, 4));
  nftnl_rule_add_expr(r, meta(NFT_META_L4PROTO, NFT_REG_1));
  nftnl_rule_add_expr(r, cmp(NFT_REG_1, &udp, 1));
  if (!strcmp(v, "nd2p")) {  // what mediaproxy's rule adds: fragments go to the stack
    uint16_t frag = htons(0x3fff), zero = 0;
    nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_NETWORK_HEADER, 6, 2, NFT_REG_1));
    nftnl_rule_add_expr(r, and_mask(&frag, &zero, 2));
    nftnl_rule_add_expr(r, cmp(NFT_REG_1, &zero, 2));
  }
  nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFT_REG32_00));
  nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG32_01));
  nftnl_rule_add_expr(r, pl(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_02));
  nftnl_rule_add_expr(r, lk("fwdm", NFT_REG32_00, NFT_REG32_00));
  if (!strcmp(v, "ip1")) {
    // regs: 00 mark, 01 daddr, 02 sport, 03 dport
    struct nftnl_expr* ms = nftnl_expr_alloc("meta");
    nftnl_expr_set_u32(ms, NFTNL_EXPR_META_KEY, NFT_META_MARK);
    nftnl_expr_set_u32(ms, NFTNL_EXPR_META_SREG, NFT_REG32_00);
    nftnl_rule_add_expr(r, ms);
    nftnl_rule_add_expr(r, nftnl_expr_alloc("notrack"));
    nftnl_rule_add_expr(r, pw(NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, 0));
    nftnl_rule_add_expr(r, pw(NFT_REG32_01, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, 1));
    nftnl_rule_add_expr(r, pw(NFT_REG32_03, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, 0));
  } else if (!strcmp(v, "ip1p")) {
    // regs: 00 mark, 01 daddr, 02 sport|dport (4 bytes, network order)
    struct nftnl_expr* ms = nftnl_expr_alloc("meta");
    nftnl_expr_set_u32(ms, NFTNL_EXPR_META_KEY, NFT_META_MARK);
    nftnl_expr_set_u32(ms, NFTNL_EXPR_META_SREG, NFT_REG32_00);
    nftnl_rule_add_expr(r, ms);
    nftnl_rule_add_expr(r, nftnl_expr_alloc("notrack"));
    nftnl_rule_add_expr(r, pw(NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, 0));
    nftnl_rule_add_expr(r, pw(NFT_REG32_01, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, 1));
  } else if (!strcmp(v, "ip1s")) {
    // regs: 00 saddr, 01 daddr, 02 sport|dport; needs accept_local=1 on the input device
    nftnl_rule_add_expr(r, nftnl_expr_alloc("notrack"));
    nftnl_rule_add_expr(r, pw(NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, 0));
    nftnl_rule_add_expr(r, pw(NFT_REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 12, 8, 1));
  } else if (!strcmp(v, "nd2e")) {
    // regs: 00 saddr, 01 daddr, 02 sport|dport, 03 oif; MACs constant (experiment: one neighbour); fwd to dev
    nftnl_rule_add_expr(r, pw(NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, 0));
    nftnl_rule_add_expr(r, pw(NFT_REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 12, 8, 1));
    uint8_t macs[12] = {0x22,0xa1,0x4f,0xd7,0x86,0x4d, 0x8e,0xff,0x3a,0x63,0xdb,0xe4};
    nftnl_rule_add_expr(r, imm(NFT_REG32_04, macs, 12));
    nftnl_rule_add_expr(r, ll_write(NFT_REG32_04));
    struct nftnl_expr* f = nftnl_expr_alloc("fwd");
    nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG32_03);
    nftnl_rule_add_expr(r, f);
  } else if (!strcmp(v, "nd2") || !strcmp(v, "nd2p")) {
    // regs: 00 saddr, 01 daddr, 02 sport|dport, 03 next hop, 04 oif
    nftnl_rule_add_expr(r, pw(NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 4, 0));
    nftnl_rule_add_expr(r, pw(NFT_REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 12, 8, 1));
    struct nftnl_expr* f = nftnl_expr_alloc("fwd");
    nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG32_04);
    nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_ADDR, NFT_REG32_03);
    nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_NFPROTO, NFPROTO_IPV4);
    nftnl_rule_add_expr(r, f);
  } else {
    // nd1/nd1t regs: 00 daddr, 01 sport, 02 dport, 03 next hop, 04 oif
    nftnl_rule_add_expr(r, pw(NFT_REG32_01, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, 0));
    nftnl_rule_add_expr(r, pw(NFT_REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, 1));
    nftnl_rule_add_expr(r, pw(NFT_REG32_02, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, 0));
    nftnl_rule_add_expr(r, imm(NFT_REG32_05, &relay, 4));
    nftnl_rule_add_expr(r, pw(NFT_REG32_05, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, 1));
    if (!strcmp(v, "nd1t")) {
      uint8_t ttl = 64;
      nftnl_rule_add_expr(r, imm(NFT_REG32_06, &ttl, 1));
      nftnl_rule_add_expr(r, pw_ttl(NFT_REG32_06));
    }
    struct nftnl_expr* f = nftnl_expr_alloc("fwd");
    nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_DEV, NFT_REG32_04);
    nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_SREG_ADDR, NFT_REG32_03);
    nftnl_expr_set_u32(f, NFTNL_EXPR_FWD_NFPROTO, NFPROTO_IPV4);
    nftnl_rule_add_expr(r, f);
  }

send:;
  char buf[MNL_SOCKET_BUFFER_SIZE];
  uint32_t seq = (uint32_t)time(NULL);
  struct mnl_nlmsg_batch* b = mnl_nlmsg_batch_start(buf, sizeof buf);
  nftnl_batch_begin(mnl_nlmsg_batch_current(b), seq++);
  mnl_nlmsg_batch_next(b);
  struct nlmsghdr* nlh = nftnl_rule_nlmsg_build_hdr(mnl_nlmsg_batch_current(b), NFT_MSG_NEWRULE,
      nd ? NFPROTO_NETDEV : NFPROTO_IPV4, NLM_F_APPEND | NLM_F_CREATE | NLM_F_ACK, seq++);
  nftnl_rule_nlmsg_build_payload(nlh, r);
  mnl_nlmsg_batch_next(b);
  nftnl_batch_end(mnl_nlmsg_batch_current(b), seq++);
  mnl_nlmsg_batch_next(b);
  struct mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) { perror("mnl"); return 1; }
  if (mnl_socket_sendto(nl, mnl_nlmsg_batch_head(b), mnl_nlmsg_batch_size(b)) < 0) { perror("send"); return 1; }
  int ret = mnl_socket_recvfrom(nl, buf, sizeof buf);
  while (ret > 0) {
    ret = mnl_cb_run(buf, ret, 0, mnl_socket_get_portid(nl), NULL, NULL);
    if (ret <= 0) break;
    ret = mnl_socket_recvfrom(nl, buf, sizeof buf);
  }
  if (ret < 0) { perror("nft rule"); return 1; }
  return 0;
}
