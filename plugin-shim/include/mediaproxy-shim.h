/*
 * mediaproxy-shim.h - public C API of libmediaproxy-shim, the client library
 * that lets any SIP proxy use the mediaproxy dispatcher the way Kamailio's
 * stock `mediaproxy` module does (use_media_proxy, end_media_session) plus the
 * NAT helpers of the old SER/OpenSER module (client_nat_test, fix_contact).
 * This header owns the whole ABI: types, constants, functions and the
 * threading and memory rules. See mediaproxy-shim(3).
 */
#ifndef MEDIAPROXY_SHIM_H
#define MEDIAPROXY_SHIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(MPSHIM_BUILDING)
#define MPSHIM_API __attribute__((visibility("default")))
#else
#define MPSHIM_API
#endif

/* Version of the library this header belongs to (see mpshim_version()). */
#define MPSHIM_VERSION_MAJOR 1
#define MPSHIM_VERSION_MINOR 3
#define MPSHIM_VERSION_PATCH 0

/*
 * Return codes, the same as the Kamailio module's script functions:
 *   MPSHIM_OK      1  success
 *   MPSHIM_ERROR  -1  error: bad input, SDP the module would refuse, dispatcher
 *                     unreachable or in its retry interval, timeout, `error`
 *                     reply, ICE negotiation end (a=remote-candidates)...
 *                     mpshim_client_last_error() says which.
 *   MPSHIM_NO_SDP -2  the message has no body (nothing was sent)
 */
#define MPSHIM_OK 1
#define MPSHIM_ERROR (-1)
#define MPSHIM_NO_SDP (-2)
/* Dialog functions only (since 1.2): nothing was sent because the event needs
 * no request: an unknown or already ended dialog, a reply the module's
 * dialog callbacks ignore (100, a failure to an in-dialog request), the
 * reply skipped after an a=remote-candidates request. */
#define MPSHIM_NOTHING 0

/* ICE relay candidate insertion (Kamailio parameter `ice_candidate`). */
#define MPSHIM_ICE_DEFAULT 0 /* message: use the client's setting */
#define MPSHIM_ICE_NONE 1    /* never insert a relay candidate */
#define MPSHIM_ICE_LOW 2     /* "low-priority": priority 16777215 */
#define MPSHIM_ICE_HIGH 3    /* "high-priority": priority 2197815295 */

/* Dialects (mpshim_config.dialect, since 1.1): whose module's requests the
 * client sends. They differ in the dialog_id (Kamailio "h_entry:h_id" as
 * given; OpenSIPS one decimal number, (h_entry << 32) | h_id), the relay ICE
 * candidate line (OpenSIPS adds "raddr <ip> rport <port>") and multipart
 * bodies (OpenSIPS: application/sdp only). */
#define MPSHIM_DIALECT_KAMAILIO 0
#define MPSHIM_DIALECT_OPENSIPS 1

/* Message types (mpshim_message.type). */
#define MPSHIM_REQUEST 0
#define MPSHIM_REPLY 1

/* IP families (mpshim_message.peer_family, since 1.3): the family of the
 * party that receives the message's SDP and sends its media to the relay.
 * Another family than that of the SDP's own addresses asks the relay for an
 * address of the receiver's family (IPv4<->IPv6 bridging). */
#define MPSHIM_FAMILY_SAME 0 /* the receiver has the SDP's family (no bridging) */
#define MPSHIM_FAMILY_IP4 4  /* the receiver is IPv4: relay address IPv4 */
#define MPSHIM_FAMILY_IP6 6  /* the receiver is IPv6: relay address IPv6 */

/* NAT tests of mpshim_client_nat_test(), to be OR-ed together. */
#define MPSHIM_NAT_PRIVATE_CONTACT 1 /* RFC 1918 address in the Contact URI */
#define MPSHIM_NAT_SOURCE_ADDRESS 2  /* top Via address differs from the source */
#define MPSHIM_NAT_PRIVATE_VIA 4     /* RFC 1918 address in the top Via */

/*
 * Client configuration. Always initialise with mpshim_config_init() (it sets
 * struct_size and the defaults), then change what you need. The library reads
 * only the first struct_size bytes, so a program built against this header
 * keeps working with later minor versions that append fields.
 */
typedef struct mpshim_config {
  size_t struct_size;
  /* Path of the dispatcher's UNIX stream socket (copied by
   * mpshim_client_new). Default "/run/mediaproxy/dispatcher.sock". */
  const char* socket_path;
  /* Upper bound in milliseconds for one call: connect + send + waiting for
   * the reply line. Default 500 (Kamailio `mediaproxy_timeout`). 1..60000. */
  int timeout_ms;
  /* After any failure (connect, send, receive, timeout, peer closed) the
   * connection is closed and no reconnect is attempted for this many
   * milliseconds; calls fail at once meanwhile. Default 10000 (the module's
   * RETRY_INTERVAL of 10 s). 0..3600000. */
  int retry_interval_ms;
  /* MPSHIM_ICE_NONE (default), MPSHIM_ICE_LOW or MPSHIM_ICE_HIGH. */
  int ice_candidate;
  /* Since 1.1: MPSHIM_DIALECT_KAMAILIO (default) or MPSHIM_DIALECT_OPENSIPS.
   * A 1.0 program's smaller struct_size means Kamailio. */
  int dialect;
} mpshim_config;

/*
 * One SIP message, as the proxy parsed it. Initialise with
 * mpshim_message_init(); unset strings are NULL. All strings are
 * NUL-terminated and only read during the call.
 */
typedef struct mpshim_message {
  size_t struct_size;
  int type;                 /* MPSHIM_REQUEST or MPSHIM_REPLY */
  int status;               /* replies: status code 100..699 (1xx: To tag not sent) */
  const char* method;       /* request method, or for a reply the CSeq method;
                               a 200 reply to INVITE without body still updates */
  const char* call_id;      /* Call-ID (required; whitespace trimmed) */
  const char* cseq;         /* CSeq number; "101" or a whole "101 INVITE" */
  const char* from_uri;     /* From URI, e.g. "sip:alice@example.com;user=phone"
                               (a leading "sip:" and any ";params" are removed,
                               "<...>" is unwrapped); NULL -> "unknown" */
  const char* to_uri;       /* To URI, same rules */
  const char* from_tag;     /* From tag of this message, NULL -> empty */
  const char* to_tag;       /* To tag of this message, NULL -> empty */
  const char* user_agent;   /* User-Agent, else Server value; NULL -> "unknown agent" */
  const char* signaling_ip; /* source IP of the message, or the value the
                               module takes from its signaling_ip AVP (a plain
                               IP, "SRC_DST" or JSON). Required. */
  const char* media_relay;  /* preferred relay IP, NULL -> none */
  const char* dialog_id;    /* e.g. "1234:5678" (h_entry:h_id), NULL -> none;
                               the OpenSIPS dialect sends "h_entry:h_id" or
                               "h_entry.h_id" as (h_entry << 32) | h_id and a
                               single decimal number as it is */
  int ice_candidate;        /* per-call override, MPSHIM_ICE_DEFAULT = client's */
  const char* content_type; /* Content-Type of the body; NULL = assume SDP.
                               "application/sdp" or "multipart/mixed;boundary=..."
                               (the SDP part is rewritten in place); anything
                               else -> MPSHIM_ERROR, like the module */
  const char* body;         /* message body (the SDP), NULL or empty = none */
  size_t body_len;          /* its length in bytes (may contain NULs) */
  /* Since 1.3: MPSHIM_FAMILY_SAME (default), _IP4 or _IP6, the family of
   * the party that receives this SDP; sent as the `families` header when it
   * differs from the SDP's. A 1.2 program's smaller struct_size means SAME.
   * Engage mode: given on the initial INVITE it is the callee's family and
   * is remembered (mpshim_dialog_request()). */
  int peer_family;
} mpshim_message;

/*
 * Inputs of the NAT helpers. Initialise with mpshim_nat_info_init().
 */
typedef struct mpshim_nat_info {
  size_t struct_size;
  const char* contact;   /* Contact header value (the first contact is used),
                            e.g. "\"Alice\" <sip:alice@10.0.0.5:5062>;expires=60" */
  const char* via;       /* top Via header value, e.g.
                            "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1;rport" */
  const char* source_ip; /* address the message came from */
  unsigned source_port;  /* port it came from */
  int sip_asymmetric;    /* nonzero: the client sends SIP from a port other
                            than the one it listens on (the old module's
                            sip_asymmetrics list): ports are not compared and
                            fix_contact keeps the Contact port */
} mpshim_nat_info;

typedef struct mpshim_client mpshim_client;

/* Engage mode (since 1.2): a table of dialogs shared by all threads. */
typedef struct mpshim_dialogs mpshim_dialogs;

/* States of a dialog in the table (mpshim_dialog_state()). */
#define MPSHIM_DIALOG_UNKNOWN 0   /* not in the table (never seen, or ended) */
#define MPSHIM_DIALOG_EARLY 1     /* initial INVITE seen, no 2xx yet */
#define MPSHIM_DIALOG_CONFIRMED 2 /* a 2xx to the initial INVITE was seen */

/*
 * Threading: a client handle is used by one thread at a time (it holds one
 * connection and one reply buffer, with no locking); different handles are
 * independent and may be used concurrently. The functions that take no
 * handle are thread-safe. A handle must not be used across fork(): create
 * one per process (e.g. in each SIP worker's child_init); the socket is
 * opened lazily on first use, with close-on-exec, and SIGPIPE is never raised.
 */

/* Library version string, e.g. "1.3.0". */
MPSHIM_API const char* mpshim_version(void);

MPSHIM_API void mpshim_config_init(mpshim_config* cfg);
MPSHIM_API void mpshim_message_init(mpshim_message* msg);
MPSHIM_API void mpshim_nat_info_init(mpshim_nat_info* info);

/* New client, or NULL (errno EINVAL for a bad config, ENOMEM). No I/O. */
MPSHIM_API mpshim_client* mpshim_client_new(const mpshim_config* cfg);
/* Close the connection and free the handle. NULL is ignored. */
MPSHIM_API void mpshim_client_free(mpshim_client* client);

/* Why the last call on this handle returned MPSHIM_ERROR or MPSHIM_NO_SDP
 * ("" after a success). Valid until the next call on the handle. */
MPSHIM_API const char* mpshim_client_last_error(const mpshim_client* client);
/* 1 if the handle currently holds an open connection, else 0. */
MPSHIM_API int mpshim_client_connected(const mpshim_client* client);

/*
 * use_media_proxy(): send one `update` for the message to the dispatcher
 * and rewrite its SDP with the relay address and ports from the reply,
 * byte-for-byte as Kamailio's module does where that gives valid SDP; where
 * the module would break the body the result is valid SDP or MPSHIM_ERROR
 * (mediaproxy-shim(3), VALID SDP).
 *
 * Returns MPSHIM_OK, MPSHIM_ERROR or MPSHIM_NO_SDP. On MPSHIM_OK and when
 * out_body is not NULL, *out_body receives the whole new body (a
 * NUL-terminated copy in memory the library allocates, to be released with
 * mpshim_free(); identical to the input when nothing needed changing, e.g.
 * no supported stream) and *out_len its length, or NULL/0 when the message
 * had no body (a 200 reply to INVITE without SDP). Otherwise *out_body is
 * set to NULL and the body must be forwarded unchanged.
 */
MPSHIM_API int mpshim_use_media_proxy(mpshim_client* client, const mpshim_message* msg,
                                      char** out_body, size_t* out_len);

/*
 * end_media_session(): send `remove` with the message's Call-ID, From tag
 * and To tag (the To tag is left empty for 1xx replies). Returns MPSHIM_OK
 * when a reply line arrived (even `error`), else MPSHIM_ERROR.
 */
MPSHIM_API int mpshim_end_media_session(mpshim_client* client, const mpshim_message* msg);

/*
 * client_nat_test(tests): run the tests selected in the bit mask `tests`
 * (MPSHIM_NAT_*, 1..7). Returns the mask of the selected tests that found
 * NAT (0 when none did; the old module returned true when this is > 0), or
 * MPSHIM_ERROR for a NULL info or a mask outside 1..7.
 */
MPSHIM_API int mpshim_client_nat_test(const mpshim_nat_info* info, int tests);

/*
 * fix_contact(): replace host:port of the first Contact URI (sip: or sips:)
 * with source_ip:source_port (for sip_asymmetric clients the URI's own port
 * is kept) and drop its maddr parameter, as Kamailio's nathelper
 * fix_nated_contact() does, whatever the transport. Returns MPSHIM_OK with
 * the whole new Contact header value in *out_value (free with mpshim_free())
 * and its length in *out_len, or MPSHIM_ERROR (no or unparsable Contact,
 * "*", another URI scheme, bad source address) with *out_value = NULL.
 */
MPSHIM_API int mpshim_fix_contact(const mpshim_nat_info* info, char** out_value, size_t* out_len);

/*
 * Engage mode (since 1.2), what Kamailio's engage_media_proxy() does with
 * the dialog module: the application reports every event of a dialog,
 * naming the dialog with msg->dialog_id (an id the caller owns, e.g.
 * "h_entry:h_id"; it is the table key and is sent as the dialog_id header,
 * converted for the OpenSIPS dialect), and the library sends `update` and
 * `remove` itself. out_body/out_len as for mpshim_use_media_proxy(); NULL
 * means: forward the body unchanged.
 *
 * Threading: a table is thread-safe. Any thread may report any event with
 * its own client handle (the handle rule above still holds); events of one
 * dialog are processed one at a time in the order they take its lock, events
 * of different dialogs concurrently. mpshim_dialogs_free() only once no
 * thread (of this process) uses the table. A table from
 * mpshim_dialogs_new_shared() is shared the same way by the processes
 * forked after its creation.
 */

/* New table holding at most max_dialogs dialogs (1..1000000), or NULL
 * (errno EINVAL, ENOMEM). */
MPSHIM_API mpshim_dialogs* mpshim_dialogs_new(unsigned max_dialogs);
/* New table in shared memory for proxies whose workers are processes
 * (Kamailio, OpenSIPS): create it before they are forked (e.g. in
 * mod_init); every child inherits it and may report events of any dialog,
 * each process with its own client handle. Its locks are process-shared
 * and robust (a process killed inside an event does not block the others).
 * max_dialogs 1..100000; NULL with errno EINVAL or ENOMEM. */
MPSHIM_API mpshim_dialogs* mpshim_dialogs_new_shared(unsigned max_dialogs);
/* Free the table and every dialog in it, sending nothing (a shared table:
 * unmap it from this process only). NULL is ignored. */
MPSHIM_API void mpshim_dialogs_free(mpshim_dialogs* dialogs);
/* Number of dialogs in the table. */
MPSHIM_API unsigned mpshim_dialogs_count(mpshim_dialogs* dialogs);
/* MPSHIM_DIALOG_EARLY, _CONFIRMED or _UNKNOWN (waits while an event of
 * that dialog is being exchanged with the dispatcher). */
MPSHIM_API int mpshim_dialog_state(mpshim_dialogs* dialogs, const char* dialog_id);

/*
 * A request of the dialog msg->dialog_id as the proxy forwards it. An
 * INVITE without To tag for an unknown dialog creates the dialog (the ICE
 * setting is fixed then for the dialog's life; MPSHIM_ERROR with "dialog
 * table full" when max_dialogs are held) and sends its `update` when it has
 * SDP (a late offer returns MPSHIM_NO_SDP, the dialog is kept). In the
 * dialog: a BYE ends it (one `remove`, as mpshim_dialog_end()); any other
 * request (ACK with the answer, re-INVITE, UPDATE, PRACK) is sent like
 * mpshim_use_media_proxy() when it has SDP. Another request of an unknown
 * dialog returns MPSHIM_NOTHING.
 *
 * Bridging (since 1.3): a peer_family other than MPSHIM_FAMILY_SAME on the
 * INVITE that creates the dialog names the callee's family and makes the
 * dialog bridged: every later SDP of the dialog (183, 200, re-INVITEs and
 * their answers either way, an ACK's answer) is sent with the other party's
 * family, i.e. the offer's families reversed for the answer. The SDP of a
 * request is its From party's, that of a reply the other party's; each
 * party's family follows the SDP it last sent, the caller's starting as
 * that of its signaling_ip (for a late offer's 200). A later event's own
 * peer_family applies to that event only.
 */
MPSHIM_API int mpshim_dialog_request(mpshim_dialogs* dialogs, mpshim_client* client,
                                     const mpshim_message* msg, char** out_body, size_t* out_len);

/*
 * A reply of the dialog as the proxy forwards it (never a locally generated
 * one). 101..299 are sent like mpshim_use_media_proxy() (each fork's 183,
 * the 2xx); a 2xx to an INVITE while early confirms the dialog with its To
 * tag; a final failure (300..699) to an INVITE while early ends the dialog
 * (one `remove`; MPSHIM_OK when answered). Anything else: MPSHIM_NOTHING.
 */
MPSHIM_API int mpshim_dialog_reply(mpshim_dialogs* dialogs, mpshim_client* client,
                                   const mpshim_message* msg, char** out_body, size_t* out_len);

/*
 * The dialog ended another way (expired, destroyed, terminated, failed):
 * send one `remove` with the dialog's Call-ID, the caller's From tag and the
 * To tag of the confirming 2xx (empty if none), and forget the dialog.
 * MPSHIM_OK when the dispatcher answered, MPSHIM_ERROR when it did not (the
 * dialog is forgotten anyway), MPSHIM_NOTHING for an unknown dialog (e.g.
 * already ended by its BYE: a remove is never sent twice).
 */
MPSHIM_API int mpshim_dialog_end(mpshim_dialogs* dialogs, mpshim_client* client,
                                 const char* dialog_id);

/* Free memory returned by this library. NULL is ignored. */
MPSHIM_API void mpshim_free(void* ptr);

#ifdef __cplusplus
}
#endif

#endif /* MEDIAPROXY_SHIM_H */
