/*
 * api.c - the exported entry points of libmediaproxy-shim: version, struct
 * initialisers, client handles and the two dispatcher functions
 * use_media_proxy() and end_media_session(), which tie the request builders,
 * the SDP analysis/rewriter and the connection together in the order and
 * with the return codes of Kamailio's module (spec A.9); an `update` also
 * carries the `families` header when the receiver's family (peer_family,
 * family.c) asks the relay to bridge IPv4 and IPv6.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "shim_internal.h"

#define STR2(x) #x
#define STR(x) STR2(x)

const char* mpshim_version(void) {
  return STR(MPSHIM_VERSION_MAJOR) "." STR(MPSHIM_VERSION_MINOR) "." STR(MPSHIM_VERSION_PATCH);
}

void mpshim_config_init(mpshim_config* cfg) {
  if (!cfg) return;
  memset(cfg, 0, sizeof *cfg);
  cfg->struct_size = sizeof *cfg;
  cfg->socket_path = "/run/mediaproxy/dispatcher.sock";
  cfg->timeout_ms = 500;
  cfg->retry_interval_ms = 10000;
  cfg->ice_candidate = MPSHIM_ICE_NONE;
}

static void message_init(mpshim_message* msg, size_t size) {
  if (!msg) return;
  memset(msg, 0, size);
  msg->struct_size = size;
  msg->type = MPSHIM_REQUEST;
  msg->ice_candidate = MPSHIM_ICE_DEFAULT;
}

#ifndef MPSHIM_BUILDING
void mpshim_message_init(mpshim_message* msg) {
  message_init(msg, sizeof *msg);
}
#else
/* mpshim_message grew in 1.3 (peer_family): a program built against 1.0-1.2
 * binds to mpshim_message_init@MEDIAPROXY_SHIM_1.0, which initialises only
 * the message it knows; one built against 1.3 (and the library itself) gets
 * the default mpshim_message_init@@MEDIAPROXY_SHIM_1.3, and a 1.3 program
 * does not start with an older library. The tests' static copy of the
 * library has the one function. */
MPSHIM_API void mps_message_init_1_3(mpshim_message* msg);
MPSHIM_API void mps_message_init_1_0(mpshim_message* msg);
void mps_message_init_1_3(mpshim_message* msg) {
  message_init(msg, sizeof *msg);
}
void mps_message_init_1_0(mpshim_message* msg) {
  message_init(msg, offsetof(mpshim_message, peer_family));
}
__asm__(".symver mps_message_init_1_3, mpshim_message_init@@MEDIAPROXY_SHIM_1.3");
__asm__(".symver mps_message_init_1_0, mpshim_message_init@MEDIAPROXY_SHIM_1.0");
#endif

void mpshim_nat_info_init(mpshim_nat_info* info) {
  if (!info) return;
  memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
}

mpshim_client* mpshim_client_new(const mpshim_config* cfg) {
  struct sockaddr_un addr;
  /* a 1.0 program's config ends before `dialect` */
  const size_t size_1_0 = offsetof(mpshim_config, dialect);
  const int has_dialect = cfg && cfg->struct_size >= sizeof(mpshim_config);
  if (!cfg || cfg->struct_size < size_1_0 || !cfg->socket_path || !cfg->socket_path[0] ||
      strlen(cfg->socket_path) >= sizeof addr.sun_path || cfg->timeout_ms < 1 ||
      cfg->timeout_ms > 60000 || cfg->retry_interval_ms < 0 || cfg->retry_interval_ms > 3600000 ||
      cfg->ice_candidate < MPSHIM_ICE_NONE || cfg->ice_candidate > MPSHIM_ICE_HIGH ||
      (has_dialect && cfg->dialect != MPSHIM_DIALECT_KAMAILIO &&
       cfg->dialect != MPSHIM_DIALECT_OPENSIPS)) {
    errno = EINVAL;
    return NULL;
  }
  mpshim_client* c = calloc(1, sizeof *c);
  if (!c) {
    errno = ENOMEM;
    return NULL;
  }
  c->socket_path = strdup(cfg->socket_path);
  if (!c->socket_path) {
    free(c);
    errno = ENOMEM;
    return NULL;
  }
  c->timeout_ms = cfg->timeout_ms;
  c->retry_interval_ms = cfg->retry_interval_ms;
  c->ice_candidate = cfg->ice_candidate;
  c->dialect = has_dialect ? cfg->dialect : MPSHIM_DIALECT_KAMAILIO;
  c->fd = -1;
  return c;
}

void mpshim_client_free(mpshim_client* c) {
  if (!c) return;
  mps_disconnect(c);
  free(c->socket_path);
  free(c);
}

const char* mpshim_client_last_error(const mpshim_client* c) {
  return c ? c->err : "no client";
}

int mpshim_client_connected(const mpshim_client* c) {
  return c && c->fd >= 0;
}

void mpshim_free(void* p) {
  free(p);
}

static int copy_out(const char* s, size_t len, char** out, size_t* out_len, char* err) {
  if (!out) return 1;
  char* r = malloc(len + 1);
  if (!r) {
    mps_seterr(err, "out of memory");
    return -1;
  }
  memcpy(r, s, len);
  r[len] = '\0';
  *out = r;
  if (out_len) *out_len = len;
  return 1;
}

int mpshim_use_media_proxy(mpshim_client* c, const mpshim_message* m, char** out_body,
                           size_t* out_len) {
  return mps_update(c, m, m ? mps_peer_family(m) : MPSHIM_FAMILY_SAME, NULL, out_body, out_len);
}

int mps_update(mpshim_client* c, const mpshim_message* m, int peer_family, int* sdp_family,
               char** out_body, size_t* out_len) {
  if (sdp_family) *sdp_family = 0;
  if (out_body) *out_body = NULL;
  if (out_len) *out_len = 0;
  if (!c) return MPSHIM_ERROR;
  c->err[0] = '\0';
  if (mps_check_message(m, c->err) < 0) return MPSHIM_ERROR;
  {
    mps_str cs = mps_trim(m->cseq), tok;
    if (!cs.s || mps_tokens(cs.s, cs.len, &tok, 1) != 1) {
      mps_seterr(c->err, "missing CSeq number");
      return MPSHIM_ERROR;
    }
  }

  const int is_request = m->type == MPSHIM_REQUEST;
  const int have_body = m->body != NULL && m->body_len > 0;
  if (!have_body) {
    /* requests without a body never reach the dispatcher; replies only when
     * they are a 200 to an INVITE (which may carry the SDP in the ACK) */
    if (is_request || !(m->status == 200 && mps_method_is(m->method, "INVITE"))) {
      mps_seterr(c->err, "the message has no body");
      return MPSHIM_NO_SDP;
    }
  }

  mps_session* s = NULL;
  char media[MPS_MEDIA_MAX + 32]; /* and the families header */
  media[0] = '\0';
  int rc = MPSHIM_ERROR;
  int family = 0;
  if (have_body) {
    mps_str sdp;
    if (mps_find_sdp(m->content_type, m->body, m->body_len, &sdp, c->err) < 0) return rc;
    if (c->dialect == MPSHIM_DIALECT_OPENSIPS && sdp.len != m->body_len) {
      mps_seterr(c->err, "the OpenSIPS module takes application/sdp bodies only");
      return rc;
    }
    if (is_request && mps_has_remote_candidates(sdp)) {
      mps_seterr(c->err, "SDP with a=remote-candidates (end of ICE negotiation) is not relayed");
      return rc;
    }
    s = malloc(sizeof *s);
    if (!s) {
      mps_seterr(c->err, "out of memory");
      return rc;
    }
    if (mps_parse_session(s, sdp, c->err) < 0) goto out;
    if (s->supported_count == 0) {
      /* nothing the relay can carry: nothing to do */
      rc = copy_out(m->body, m->body_len, out_body, out_len, c->err);
      goto out;
    }
    /* no valid body can be made by editing this text: refuse before the
     * dispatcher is asked (the module sends and then breaks the body) */
    if (mps_check_sdp_text(sdp, c->err) < 0) goto out;
    const int mlen = mps_media_header(s, media, c->err);
    if (mlen < 0) goto out;
    /* bridging, or an IPv6 party the dispatcher cannot tell from its items */
    if (mps_families_header(s, peer_family, media + mlen, sizeof media - (size_t)mlen, c->err) < 0)
      goto out;
    family = mps_sdp_family(s);
  }

  char req[MPS_REQUEST_MAX];
  int len = mps_build_update_dialect(m, media, c->dialect, req, sizeof req, c->err);
  if (len < 0) goto out;
  if (mps_send_command(c, req, (size_t)len) < 0) goto out;
  if (!have_body) {
    rc = MPSHIM_OK; /* the dispatcher is informed; no SDP to change */
    goto out;
  }
  const int ice = m->ice_candidate != MPSHIM_ICE_DEFAULT ? m->ice_candidate : c->ice_candidate;
  char* body = NULL;
  size_t blen = 0;
  if (mps_rewrite_dialect(s, m->body, m->body_len, c->reply, is_request, ice, c->dialect, &body,
                          &blen, c->err) < 0) {
    goto out;
  }
  if (out_body) {
    *out_body = body;
    if (out_len) *out_len = blen;
  } else {
    free(body);
  }
  rc = MPSHIM_OK;
  if (sdp_family) *sdp_family = family;
out:
  free(s);
  if (rc == MPSHIM_OK) c->err[0] = '\0';
  return rc;
}

int mpshim_end_media_session(mpshim_client* c, const mpshim_message* m) {
  if (!c) return MPSHIM_ERROR;
  c->err[0] = '\0';
  if (mps_check_message(m, c->err) < 0) return MPSHIM_ERROR;
  char req[MPS_REMOVE_MAX];
  int len = mps_build_remove(m, req, sizeof req, c->err);
  if (len < 0) return MPSHIM_ERROR;
  if (mps_send_command(c, req, (size_t)len) < 0) return MPSHIM_ERROR;
  return MPSHIM_OK; /* any reply line, even "error", as the module */
}
