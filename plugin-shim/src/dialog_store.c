/*
 * dialog_store.c - where engage mode keeps its dialogs: the table (a hash
 * of fixed-size dialog records keyed by dialog_id, bounded by max_dialogs)
 * either in the process's heap (mpshim_dialogs_new: for threads) or in one
 * anonymous shared mapping made before fork() (mpshim_dialogs_new_shared:
 * for proxies whose workers are processes), where the records come from a
 * preallocated pool and every mutex is process-shared and robust, so that a
 * process dying inside a dialog's lock does not block the others. Records
 * are found, created, unlinked and released here under the table lock; the
 * state machine that uses them is dialog.c.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "shim_internal.h"

#define MPS_DIALOGS_MAX 1000000u
#define MPS_SHARED_DIALOGS_MAX 100000u
/* shared pool: records of ended dialogs still referenced by an event that
 * is running in some thread or process */
#define MPS_SHARED_SPARE 256u

static uint32_t hash(mps_str s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < s.len; i++) h = (h ^ (unsigned char)s.s[i]) * 16777619u;
  return h;
}

static mps_dialog** bucket(mpshim_dialogs* t, mps_str id) {
  return &t->buckets[hash(id) & (t->nbuckets - 1)];
}

static int key_eq(const mps_dialog* d, mps_str id) {
  return strlen(d->id) == id.len && memcmp(d->id, id.s, id.len) == 0;
}

void mps_lock(pthread_mutex_t* m) {
  /* a process died holding it (robust, shared tables): the record's data
   * is whole between events, take it over */
  if (pthread_mutex_lock(m) == EOWNERDEAD) pthread_mutex_consistent(m);
}

static int init_mutex(pthread_mutex_t* m, int shared) {
  pthread_mutexattr_t a;
  if (pthread_mutexattr_init(&a) != 0) return -1;
  int rc = 0;
  if (shared) {
    rc |= pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    rc |= pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  }
  rc |= pthread_mutex_init(m, &a);
  pthread_mutexattr_destroy(&a);
  return rc == 0 ? 0 : -1;
}

static unsigned bucket_count(unsigned max_dialogs) {
  unsigned n = 16;
  while (n < max_dialogs && n < 65536) n *= 2;
  return n;
}

mpshim_dialogs* mpshim_dialogs_new(unsigned max_dialogs) {
  if (max_dialogs < 1 || max_dialogs > MPS_DIALOGS_MAX) {
    errno = EINVAL;
    return NULL;
  }
  mpshim_dialogs* t = calloc(1, sizeof *t);
  const unsigned n = bucket_count(max_dialogs);
  if (t) t->buckets = calloc(n, sizeof *t->buckets);
  if (!t || !t->buckets || init_mutex(&t->lock, 0) < 0) {
    if (t) free(t->buckets);
    free(t);
    errno = ENOMEM;
    return NULL;
  }
  t->max = max_dialogs;
  t->nbuckets = n;
  return t;
}

static size_t align64(size_t n) {
  return (n + 63) & ~(size_t)63;
}

mpshim_dialogs* mpshim_dialogs_new_shared(unsigned max_dialogs) {
  if (max_dialogs < 1 || max_dialogs > MPS_SHARED_DIALOGS_MAX) {
    errno = EINVAL;
    return NULL;
  }
  const unsigned n = bucket_count(max_dialogs);
  const unsigned nslots = max_dialogs + MPS_SHARED_SPARE;
  const size_t buckets_at = align64(sizeof(mpshim_dialogs));
  const size_t slots_at = align64(buckets_at + n * sizeof(mps_dialog*));
  const size_t len = slots_at + (size_t)nslots * sizeof(mps_dialog);
  /* zero-filled and touched only as records are used */
  void* map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  mpshim_dialogs* t = map;
  if (init_mutex(&t->lock, 1) < 0) {
    munmap(map, len);
    errno = ENOMEM;
    return NULL;
  }
  t->shared = 1;
  t->map_len = len;
  t->max = max_dialogs;
  t->nbuckets = n;
  t->buckets = (mps_dialog**)((char*)map + buckets_at);
  t->slots = (mps_dialog*)((char*)map + slots_at);
  t->nslots = nslots;
  return t;
}

void mpshim_dialogs_free(mpshim_dialogs* t) {
  if (!t) return;
  if (t->shared) {
    munmap(t, t->map_len); /* this process's mapping only */
    return;
  }
  for (unsigned i = 0; i < t->nbuckets; i++) {
    mps_dialog* d = t->buckets[i];
    while (d) {
      mps_dialog* next = d->next;
      pthread_mutex_destroy(&d->lock);
      free(d);
      d = next;
    }
  }
  pthread_mutex_destroy(&t->lock);
  free(t->buckets);
  free(t);
}

unsigned mpshim_dialogs_count(mpshim_dialogs* t) {
  if (!t) return 0;
  mps_lock(&t->lock);
  unsigned n = t->count;
  pthread_mutex_unlock(&t->lock);
  return n;
}

mps_dialog* mps_dialog_find_ref(mpshim_dialogs* t, mps_str id) {
  mps_lock(&t->lock);
  mps_dialog* d = *bucket(t, id);
  while (d && !key_eq(d, id)) d = d->next;
  if (d) d->refs++;
  pthread_mutex_unlock(&t->lock);
  return d;
}

/* A blank record (table lock held), or NULL. */
static mps_dialog* slot_alloc(mpshim_dialogs* t) {
  mps_dialog* d;
  if (!t->shared) {
    d = calloc(1, sizeof *d);
  } else if (t->free_slots) {
    d = t->free_slots;
    t->free_slots = d->next;
    memset(d, 0, sizeof *d);
  } else if (t->slots_used < t->nslots) {
    d = &t->slots[t->slots_used++];
  } else {
    return NULL;
  }
  if (d && init_mutex(&d->lock, t->shared) < 0) {
    if (!t->shared) free(d);
    return NULL;
  }
  return d;
}

/* Release a record no one uses (table lock held). */
static void slot_free(mpshim_dialogs* t, mps_dialog* d) {
  pthread_mutex_destroy(&d->lock);
  if (!t->shared) {
    free(d);
    return;
  }
  d->next = t->free_slots;
  t->free_slots = d;
}

void mps_dialog_unref(mpshim_dialogs* t, mps_dialog* d) {
  mps_lock(&t->lock);
  if (--d->refs == 0 && !d->linked) slot_free(t, d);
  pthread_mutex_unlock(&t->lock);
}

void mps_dialog_unlink(mpshim_dialogs* t, mps_dialog* d) {
  mps_lock(&t->lock);
  if (d->linked) {
    mps_dialog** p = bucket(t, (mps_str){d->id, strlen(d->id)});
    while (*p != d) p = &(*p)->next;
    *p = d->next;
    d->linked = 0;
    t->count--;
  }
  pthread_mutex_unlock(&t->lock);
}

mps_dialog* mps_dialog_create_ref(mpshim_dialogs* t, mps_str id, mps_str call_id,
                                  mps_str caller_tag, int ice, int callee_family, int caller_family,
                                  char* err) {
  mps_lock(&t->lock);
  mps_dialog** head = bucket(t, id);
  mps_dialog* d = *head;
  while (d && !key_eq(d, id)) d = d->next;
  if (d) { /* another thread or process just created it */
    d->refs++;
  } else if (t->count >= t->max || (d = slot_alloc(t)) == NULL) {
    mps_seterr(err, "dialog table full: %u dialogs (max_dialogs)", t->max);
  } else {
    memcpy(d->id, id.s, id.len);
    memcpy(d->call_id, call_id.s, call_id.len);
    if (caller_tag.len) memcpy(d->caller_tag, caller_tag.s, caller_tag.len);
    d->state = MPSHIM_DIALOG_EARLY;
    d->ice = ice;
    d->bridge = callee_family != MPSHIM_FAMILY_SAME;
    d->family[0] = caller_family;
    d->family[1] = callee_family;
    d->refs = 1;
    d->linked = 1;
    d->next = *head;
    *head = d;
    t->count++;
  }
  pthread_mutex_unlock(&t->lock);
  return d;
}
