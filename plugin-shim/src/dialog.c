/*
 * dialog.c - engage mode's state machine (its table is dialog_store.c): it
 * turns the dialog events an application reports into the `update` and
 * `remove` requests the Kamailio/OpenSIPS module sends from its dialog
 * callbacks (spec A.9): in-dialog requests and forwarded replies 101..299
 * are relayed with the dialog's dialog_id and the ICE setting fixed at
 * creation; the reply after an a=remote-candidates request is skipped; the
 * first of BYE, a failure to the initial INVITE, or an explicit end sends
 * one `remove` with the caller's From tag and the confirming 2xx's To tag.
 * A peer_family on the initial INVITE makes the dialog bridged: every later
 * SDP is sent with the other party's family, so the answer gets the
 * families of the offer reversed.
 *
 * Locking: the table mutex (dialog_store.c) guards the hash chains, the
 * count and every dialog's reference count; a dialog's own mutex guards its
 * state and is held while its requests are exchanged, so events of one
 * dialog are serialised and events of different dialogs run concurrently.
 * The table mutex is never taken while waiting for a dialog mutex, only
 * inside one. An ended dialog leaves the table at once and is released by
 * its last user.
 */
#include <pthread.h>
#include <string.h>

#include "shim_internal.h"

/* Create the dialog of an initial INVITE (or find the one another thread
 * just created), with a reference taken; NULL with err when the table is
 * full or a value is too long. */
static mps_dialog* create_ref(mpshim_dialogs* t, mps_str id, const mpshim_message* m,
                              int client_ice, char* err) {
  mps_str call_id = mps_trim(m->call_id);
  mps_str tag = mps_trim(m->from_tag);
  if (!tag.s) tag = (mps_str){"", 0};
  if (call_id.len == 0 || call_id.len > MPS_CALL_ID_MAX) {
    mps_seterr(err, "Call-ID empty or longer than %d bytes", MPS_CALL_ID_MAX);
    return NULL;
  }
  if (tag.len > MPS_TAG_MAX) {
    mps_seterr(err, "From tag longer than %d bytes", MPS_TAG_MAX);
    return NULL;
  }
  const int ice = m->ice_candidate != MPSHIM_ICE_DEFAULT ? m->ice_candidate : client_ice;
  /* the caller's family until its SDP tells: its signaling address, when
   * that is a plain address (a late offer's 200 is sent with it) */
  const int caller_family = mps_addr_family(mps_trim(m->signaling_ip), NULL);
  return mps_dialog_create_ref(t, id, call_id, tag, ice, mps_peer_family(m), caller_family, err);
}

/* Validate the table, client, message and its dialog_id; 1 or -1. */
static int check_event(mpshim_dialogs* t, mpshim_client* c, const mpshim_message* m, mps_str* id) {
  if (!c) return -1;
  c->err[0] = '\0';
  if (!t) {
    mps_seterr(c->err, "no dialog table");
    return -1;
  }
  if (mps_check_message(m, c->err) < 0) return -1;
  *id = mps_trim(m->dialog_id);
  if (id->len == 0 || id->len > MPS_DIALOG_ID_MAX) {
    mps_seterr(c->err, "dialog_id empty or longer than %d bytes", MPS_DIALOG_ID_MAX);
    return -1;
  }
  return 1;
}

/* The message belongs to the dialog's call (dialog lock held). */
static int same_call(const mps_dialog* d, const mpshim_message* m, char* err) {
  mps_str call_id = mps_trim(m->call_id);
  if (call_id.len != strlen(d->call_id) || memcmp(call_id.s, d->call_id, call_id.len) != 0) {
    mps_seterr(err, "Call-ID differs from the dialog's");
    return 0;
  }
  return 1;
}

/* End the dialog (dialog lock held): leave the table and send `remove`. */
static int end_locked(mpshim_dialogs* t, mpshim_client* c, mps_dialog* d) {
  d->state = MPSHIM_DIALOG_UNKNOWN;
  mps_dialog_unlink(t, d);
  mpshim_message rm;
  mpshim_message_init(&rm);
  rm.type = MPSHIM_REQUEST;
  rm.method = "BYE";
  rm.call_id = d->call_id;
  rm.from_tag = d->caller_tag;
  rm.to_tag = d->callee_tag;
  return mpshim_end_media_session(c, &rm);
}

/* 1 if the message's From tag is the caller's (dialog lock held). */
static int from_caller(const mps_dialog* d, const mpshim_message* m) {
  mps_str tag = mps_trim(m->from_tag);
  return tag.len == strlen(d->caller_tag) &&
         (tag.len == 0 || !memcmp(tag.s, d->caller_tag, tag.len));
}

/* `update` for a message of the dialog, with the dialog's ICE setting and,
 * in a bridged dialog, the receiving party's family: a request's SDP is its
 * From party's, a reply's the other party's. Each party's family follows
 * the SDP it last sent. */
static int update_locked(mpshim_client* c, mps_dialog* d, const mpshim_message* m, char** out_body,
                         size_t* out_len) {
  mpshim_message copy;
  memset(&copy, 0, sizeof copy); /* a 1.2 program's message is shorter */
  memcpy(&copy, m, m->struct_size < sizeof copy ? m->struct_size : sizeof copy);
  copy.struct_size = sizeof copy;
  copy.ice_candidate = d->ice;
  const int sender = (m->type == MPSHIM_REQUEST) == from_caller(d, m) ? 0 : 1;
  int peer = mps_peer_family(m);
  if (peer == MPSHIM_FAMILY_SAME && d->bridge) peer = d->family[1 - sender];
  int family = 0;
  int rc = mps_update(c, &copy, peer, &family, out_body, out_len);
  if (family) d->family[sender] = family;
  return rc;
}

static void clear_out(char** out_body, size_t* out_len) {
  if (out_body) *out_body = NULL;
  if (out_len) *out_len = 0;
}

/* 1 if the request carries SDP with a=remote-candidates. */
static int ends_ice(const mpshim_message* m) {
  mps_str sdp;
  char err[MPS_ERR_MAX];
  if (!m->body || m->body_len == 0) return 0;
  if (mps_find_sdp(m->content_type, m->body, m->body_len, &sdp, err) < 0) return 0;
  return mps_has_remote_candidates(sdp);
}

int mpshim_dialog_request(mpshim_dialogs* t, mpshim_client* c, const mpshim_message* m,
                          char** out_body, size_t* out_len) {
  clear_out(out_body, out_len);
  mps_str id;
  if (check_event(t, c, m, &id) < 0) return MPSHIM_ERROR;
  if (m->type != MPSHIM_REQUEST) {
    mps_seterr(c->err, "mpshim_dialog_request() needs a request");
    return MPSHIM_ERROR;
  }
  mps_dialog* d = mps_dialog_find_ref(t, id);
  if (!d) {
    mps_str to_tag = mps_trim(m->to_tag);
    if (!mps_method_is(m->method, "INVITE") || to_tag.len > 0) {
      mps_seterr(c->err, "no such dialog (only an INVITE without To tag creates one)");
      return MPSHIM_NOTHING;
    }
    d = create_ref(t, id, m, c->ice_candidate, c->err);
    if (!d) return MPSHIM_ERROR;
  }
  int rc;
  mps_lock(&d->lock);
  if (d->state == MPSHIM_DIALOG_UNKNOWN) {
    mps_seterr(c->err, "the dialog has ended");
    rc = MPSHIM_NOTHING;
  } else if (!same_call(d, m, c->err)) {
    rc = MPSHIM_ERROR;
  } else if (mps_method_is(m->method, "BYE")) {
    rc = end_locked(t, c, d);
  } else {
    if (ends_ice(m)) d->skip_next_reply = 1;
    rc = update_locked(c, d, m, out_body, out_len);
  }
  pthread_mutex_unlock(&d->lock);
  mps_dialog_unref(t, d);
  return rc;
}

int mpshim_dialog_reply(mpshim_dialogs* t, mpshim_client* c, const mpshim_message* m,
                        char** out_body, size_t* out_len) {
  clear_out(out_body, out_len);
  mps_str id;
  if (check_event(t, c, m, &id) < 0) return MPSHIM_ERROR;
  if (m->type != MPSHIM_REPLY) {
    mps_seterr(c->err, "mpshim_dialog_reply() needs a reply");
    return MPSHIM_ERROR;
  }
  mps_dialog* d = mps_dialog_find_ref(t, id);
  if (!d) {
    mps_seterr(c->err, "no such dialog");
    return MPSHIM_NOTHING;
  }
  const int invite = mps_method_is(m->method, "INVITE");
  int rc = MPSHIM_NOTHING;
  mps_lock(&d->lock);
  if (d->state == MPSHIM_DIALOG_UNKNOWN) {
    mps_seterr(c->err, "the dialog has ended");
  } else if (!same_call(d, m, c->err)) {
    rc = MPSHIM_ERROR;
  } else if (m->status >= 300) {
    if (invite && d->state == MPSHIM_DIALOG_EARLY) {
      rc = end_locked(t, c, d);
    } else {
      mps_seterr(c->err, "a failure to an in-dialog request is not relayed");
    }
  } else if (m->status == 100) {
    mps_seterr(c->err, "100 is not relayed");
  } else {
    mps_str to_tag = mps_trim(m->to_tag);
    if (m->status >= 200 && invite && d->state == MPSHIM_DIALOG_EARLY) {
      if (to_tag.len > MPS_TAG_MAX) {
        mps_seterr(c->err, "To tag longer than %d bytes", MPS_TAG_MAX);
        rc = MPSHIM_ERROR;
        goto out;
      }
      if (to_tag.len > 0) memcpy(d->callee_tag, to_tag.s, to_tag.len); /* NULL: no tag */
      d->callee_tag[to_tag.len] = '\0';
      d->state = MPSHIM_DIALOG_CONFIRMED;
    }
    if (d->skip_next_reply) {
      d->skip_next_reply = 0;
      mps_seterr(c->err, "the reply to an a=remote-candidates request is not relayed");
    } else {
      rc = update_locked(c, d, m, out_body, out_len);
    }
  }
out:
  pthread_mutex_unlock(&d->lock);
  mps_dialog_unref(t, d);
  return rc;
}

int mpshim_dialog_end(mpshim_dialogs* t, mpshim_client* c, const char* dialog_id) {
  if (!c) return MPSHIM_ERROR;
  c->err[0] = '\0';
  mps_str id = mps_trim(dialog_id);
  if (!t || id.len == 0 || id.len > MPS_DIALOG_ID_MAX) {
    mps_seterr(c->err, "no dialog table, or dialog_id empty or longer than %d bytes",
               MPS_DIALOG_ID_MAX);
    return MPSHIM_ERROR;
  }
  mps_dialog* d = mps_dialog_find_ref(t, id);
  if (!d) {
    mps_seterr(c->err, "no such dialog");
    return MPSHIM_NOTHING;
  }
  int rc = MPSHIM_NOTHING;
  mps_lock(&d->lock);
  if (d->state == MPSHIM_DIALOG_UNKNOWN) {
    mps_seterr(c->err, "the dialog has ended");
  } else {
    rc = end_locked(t, c, d);
  }
  pthread_mutex_unlock(&d->lock);
  mps_dialog_unref(t, d);
  return rc;
}

int mpshim_dialog_state(mpshim_dialogs* t, const char* dialog_id) {
  mps_str id = mps_trim(dialog_id);
  if (!t || id.len == 0 || id.len > MPS_DIALOG_ID_MAX) return MPSHIM_DIALOG_UNKNOWN;
  mps_dialog* d = mps_dialog_find_ref(t, id);
  if (!d) return MPSHIM_DIALOG_UNKNOWN;
  mps_lock(&d->lock);
  int state = d->state;
  pthread_mutex_unlock(&d->lock);
  mps_dialog_unref(t, d);
  return state;
}
