/*
 * shim_internal.h - declarations shared by the modules of libmediaproxy-shim
 * and by its tests (which link the internal static library): the text
 * scanning primitives with the stock module's exact semantics, the parsed
 * SDP session, the pure request builders and SDP rewriter, and the
 * connection layer. Nothing here is exported from the shared library.
 */
#ifndef MPSHIM_INTERNAL_H
#define MPSHIM_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "mediaproxy-shim.h"

#define MPS_MAX_STREAMS 32   /* module: MAX_STREAMS */
#define MPS_REQUEST_MAX 8192 /* module: char request[8192] */
#define MPS_REMOVE_MAX 2048  /* module: end_media_session request[2048] */
#define MPS_MEDIA_MAX 4096   /* module: char media_str[4096] */
#define MPS_REPLY_MAX 8192   /* module: BUFFER_SIZE (8191 bytes + NUL) */
#define MPS_LINE_BUF 256     /* inserted lines (the module: buf[128]) */
#define MPS_ERR_MAX 256

/* A slice of some buffer; s == NULL means "absent". */
typedef struct mps_str {
  const char* s;
  size_t len;
} mps_str;

/* ---- text primitives (text.c) ------------------------------------------ */

void mps_seterr(char* err, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

/* First occurrence of needle in [hs, hs+len), optionally ASCII case-blind. */
const char* mps_memfind(const char* hs, size_t len, const char* needle, size_t nlen, int icase);
/* The module's find_line_starting_with(): the first occurrence of `start`
 * that begins the block or follows CR/LF, with the module's quirk that an
 * occurrence ending exactly at the block end is returned wherever it is. */
const char* mps_find_line(const char* block, size_t blen, const char* start, int icase);
/* The module's count_lines_starting_with(). */
unsigned mps_count_lines(const char* block, size_t blen, const char* start, int icase);
/* Pointer to the first CR or LF in [s, s+len), or s+len. */
const char* mps_end_of_line(const char* s, size_t len);
/* Split [s, s+len) (cut at the first NUL, as the module's strlen) at
 * " \t\r\n" into at most `limit` tokens; returns the count. */
int mps_tokens(const char* s, size_t len, mps_str* tokens, int limit);
/* Whitespace trim (' ', '\t', '\r', '\n') of a NUL-terminated string. */
mps_str mps_trim(const char* s);
int mps_str_eq(mps_str a, const char* lit);
int mps_str_ieq(mps_str a, const char* lit);
/* strtol() of a token as the module's strtoint(): (int)strtol(s, 10). */
int mps_strtoint(mps_str t);
/* 1 if a method, or a whole CSeq value "1 INVITE", is `name`. */
int mps_method_is(const char* method, const char* name);

/* ---- SDP analysis and rewriting (sdp.c) -------------------------------- */

typedef struct mps_stream {
  mps_str type;
  mps_str ip;
  mps_str ip_type;   /* address type token of the stream's own c= line */
  mps_str port;      /* without a "/1" suffix (supported streams) */
  mps_str rtcp_ip;   /* 4-token a=rtcp: address, or absent */
  mps_str rtcp_type; /* 4-token a=rtcp: address type, or absent */
  mps_str rtcp_port; /* first a=rtcp: token, or absent */
  mps_str direction;
  int local_ip;  /* the stream has its own c= line */
  int ip_family; /* 4 or 6: the family of `ip` (supported streams), else 0 */
  int ip_zero;   /* `ip` is 0.0.0.0 or :: (hold) */
  int has_ice;
  int has_rtcp_ice;
  int supported;
  /* Insertion point after the m= line: after the m= line's own line ending
   * (the module's: after the m= text plus the length of the separator, which
   * lands inside the next line when the endings are mixed). */
  const char* next_line;
  mps_str m_eol;                   /* the m= line's own ending ("" at the end) */
  const char* first_ice_candidate; /* NULL if none (or not at a line start) */
  mps_str candidate_eol;           /* that candidate line's own ending */
} mps_stream;

typedef struct mps_session {
  const char* sdp; /* the SDP text (inside the body) */
  size_t sdp_len;
  mps_str ip;      /* session-level c= address, or absent */
  mps_str ip_type; /* its address type token ("IP4", "IP6") */
  mps_str ip_line; /* the whole session c= line incl. line breaks */
  int ip_family;   /* 4 or 6 when there is a relayed stream, else 0 */
  int ip_zero;     /* the session address is 0.0.0.0 or :: (hold) */
  mps_str direction;
  mps_str separator; /* the module's: up to 2 CR/LF bytes after the v= line */
  mps_str eol;       /* ending for inserted lines that have no neighbour's:
                        CRLF or LF from the separator, else CRLF */
  mps_stream streams[MPS_MAX_STREAMS];
  unsigned stream_count;
  unsigned supported_count;
} mps_session;

/* Locate the SDP inside a body given its Content-Type (NULL = the body is
 * the SDP). 1 with *sdp set, or -1 with err. */
int mps_find_sdp(const char* content_type, const char* body, size_t body_len, mps_str* sdp,
                 char* err);
/* 1 if the SDP has a line starting with "a=remote-candidates". */
int mps_has_remote_candidates(mps_str sdp);
/* The module's get_session_info(): number of m= lines (0..32) or -1. */
int mps_parse_session(mps_session* s, mps_str sdp, char* err);
/* Refuses (-1 with err) an SDP the shim will not rewrite because no valid
 * body can come out of editing it: a CR not followed by LF (a line ending
 * neither CRLF nor LF) or a NUL byte. 1 otherwise. */
int mps_check_sdp_text(mps_str sdp, char* err);
/* "media: ...\r\n" for the supported streams into buf (MPS_MEDIA_MAX), an
 * IPv6 address in brackets; returns its length or -1. */
int mps_media_header(const mps_session* s, char* buf, char* err);
/* Apply a dispatcher reply to the body (the session was parsed from it),
 * rewrite.c. ice_mode is MPSHIM_ICE_NONE/LOW/HIGH. Returns 1 with a
 * malloc()ed, NUL-terminated new body in *out, or -1 (also for a reply whose
 * first token is not an IPv4/IPv6 address or whose ports are not numbers
 * 0..65535). */
int mps_rewrite(const mps_session* s, const char* body, size_t body_len, const char* reply,
                int is_request, int ice_mode, char** out, size_t* out_len, char* err);
/* The same in a dialect: the OpenSIPS relay candidate line. */
int mps_rewrite_dialect(const mps_session* s, const char* body, size_t body_len, const char* reply,
                        int is_request, int ice_mode, int dialect, char** out, size_t* out_len,
                        char* err);

/* ---- address families (family.c) --------------------------------------- */

/* The family of a literal address token: 4 (dotted quad), 6 (IPv6 text, no
 * brackets, no zone) or 0 (no literal address, e.g. a hostname or "None");
 * *zero (if not NULL) tells whether it is 0.0.0.0 or ::. */
int mps_addr_family(mps_str a, int* zero);
/* The family an address type token names: "IP4" 4, "IP6" 6 (any case), else 0. */
int mps_type_family(mps_str type);
/* A copy of s for an error message: printable ASCII kept, other bytes and
 * '\' as \xNN, cut with "..." to fit cap (> 4). Returns buf. */
const char* mps_esc(mps_str s, char* buf, size_t cap);
/* Called by mps_parse_session() once a session has a relayed stream: every
 * c= line it relays or rewrites (the session's, the relayed streams' own)
 * and every long a=rtcp: line of a relayed stream must be "IN IP4 <IPv4>"
 * or "IN IP6 <IPv6>"; sets the ip_family/ip_zero fields. 1, or -1 with err. */
int mps_check_addresses(mps_session* s, char* err);
/* The family of the party whose SDP this is: that of the first relayed
 * stream's non-zero address, else of the first one on hold, else 4. */
int mps_sdp_family(const mps_session* s);
/* "families: a,b\r\n" into buf[cap] (a = mps_sdp_family(), b = peer_family,
 * or a for MPSHIM_FAMILY_SAME) when the dispatcher would not infer the same
 * from the media items (b differs from a, or the party is IPv6 with only
 * :: addresses); "" otherwise. Returns the length, or -1 with err. */
int mps_families_header(const mps_session* s, int peer_family, char* buf, size_t cap, char* err);
/* The hold address of a family: "0.0.0.0" or "::". */
mps_str mps_hold_address(int family);

/* ---- request builders (request.c) -------------------------------------- */

/* The message's peer_family, MPSHIM_FAMILY_SAME when its struct_size (a
 * 1.0-1.2 program's) does not reach the field. */
int mps_peer_family(const mpshim_message* m);
/* Validate the message; 1 or -1 with err. */
int mps_check_message(const mpshim_message* m, char* err);
/* The `update` request, headers in the module's order. Returns its length
 * or -1 (too long, invalid characters). media_header may be "". */
int mps_build_update(const mpshim_message* m, const char* media_header, char* buf, size_t cap,
                     char* err);
/* The same in a dialect (MPSHIM_DIALECT_*): the OpenSIPS dialog_id. */
int mps_build_update_dialect(const mpshim_message* m, const char* media_header, int dialect,
                             char* buf, size_t cap, char* err);
/* The dialog_id a dialect sends for the one given (NULL = none) into
 * out[cap]: 1, or -1 with err (OpenSIPS: not "E:I", "E.I" or a number). */
int mps_dialog_id(const char* given, int dialect, char* out, size_t cap, char* err);
/* The `remove` request. Returns its length or -1. */
int mps_build_remove(const mpshim_message* m, char* buf, size_t cap, char* err);

/* ---- entry points (api.c) ----------------------------------------------- */

/* mpshim_use_media_proxy() with the receiver's family given (engage mode
 * passes the one the dialog remembers); *sdp_family (if not NULL) receives
 * the family of the SDP's party (mps_sdp_family()) when the body was sent,
 * else 0. */
int mps_update(mpshim_client* c, const mpshim_message* m, int peer_family, int* sdp_family,
               char** out_body, size_t* out_len);

/* ---- connection (conn.c) ------------------------------------------------ */

struct mpshim_client {
  char* socket_path;
  int timeout_ms;
  int retry_interval_ms;
  int ice_candidate;
  int dialect;
  int fd;
  int have_failure;
  int64_t last_failure_ms;
  char reply[MPS_REPLY_MAX];
  size_t reply_len;
  char err[MPS_ERR_MAX];
};

int64_t mps_now_ms(void);
/* Send a request and wait for one reply line (in client->reply, NUL
 * terminated). 1, or -1 with client->err (and the connection closed and the
 * retry interval started when the failure was a connection failure). */
int mps_send_command(mpshim_client* c, const char* req, size_t len);
void mps_disconnect(mpshim_client* c);

/* ---- engage mode: dialog table (dialog_store.c), events (dialog.c) ----- */

#define MPS_DIALOG_ID_MAX 255 /* bytes of a dialog_id */
#define MPS_CALL_ID_MAX 1024  /* bytes of a stored Call-ID */
#define MPS_TAG_MAX 255       /* bytes of a stored tag */

/* One dialog; fixed size so that shared tables can pool them. */
typedef struct mps_dialog {
  struct mps_dialog* next; /* hash chain or free list (table lock) */
  unsigned refs;           /* events holding a pointer (table lock) */
  int linked;              /* in the table (table lock) */
  pthread_mutex_t lock;
  int state; /* MPSHIM_DIALOG_*, UNKNOWN once ended (dialog lock) */
  int ice;   /* MPSHIM_ICE_NONE/LOW/HIGH or DEFAULT, fixed at creation */
  int skip_next_reply;
  int bridge;    /* the initial INVITE named the callee's family (dialog lock) */
  int family[2]; /* caller's, callee's family: 4, 6 or 0 unknown (dialog lock) */
  char id[MPS_DIALOG_ID_MAX + 1];
  char call_id[MPS_CALL_ID_MAX + 1];
  char caller_tag[MPS_TAG_MAX + 1];
  char callee_tag[MPS_TAG_MAX + 1];
} mps_dialog;

struct mpshim_dialogs {
  pthread_mutex_t lock; /* chains, count, refs, pool */
  unsigned max, count, nbuckets;
  mps_dialog** buckets;
  int shared;        /* in a shared mapping (mpshim_dialogs_new_shared) */
  size_t map_len;    /* shared: the mapping's length */
  mps_dialog* slots; /* shared: the record pool */
  unsigned nslots, slots_used;
  mps_dialog* free_slots;
};

/* Lock a mutex, taking over one whose owner process died. */
void mps_lock(pthread_mutex_t* m);
/* The dialog with this id with a reference taken, or NULL. */
mps_dialog* mps_dialog_find_ref(mpshim_dialogs* t, mps_str id);
/* The new dialog (state EARLY), or the one another thread or process just
 * created, with a reference taken; NULL with err when the table is full.
 * The values' lengths are checked by the caller. callee_family is the
 * initial INVITE's peer_family (MPSHIM_FAMILY_SAME: no bridging),
 * caller_family the caller's family if known, else 0. */
mps_dialog* mps_dialog_create_ref(mpshim_dialogs* t, mps_str id, mps_str call_id,
                                  mps_str caller_tag, int ice, int callee_family, int caller_family,
                                  char* err);
/* Take the dialog out of the table (it stays valid while referenced). */
void mps_dialog_unlink(mpshim_dialogs* t, mps_dialog* d);
/* Drop a reference; the last one of an unlinked dialog releases it. */
void mps_dialog_unref(mpshim_dialogs* t, mps_dialog* d);

/* ---- NAT helpers (nat.c) ------------------------------------------------ */

/* 1 if the text is an IPv4 address (inet_aton syntax) in 10/8, 172.16/12
 * or 192.168/16, 0 if public, -1 if not an IPv4 address. */
int mps_rfc1918(mps_str host);

#endif /* MPSHIM_INTERNAL_H */
