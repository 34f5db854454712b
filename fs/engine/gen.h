/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Snapshot generations: which one `.snapshot` shows, when to capture a new one, when an old
 * one may go (the rules are at the top of gen.c). No FUSE and no processes here: a capture is
 * a callback, so the daemon's policy can be tested on its own. Prefix: gen_. */
#ifndef STILL_GEN_H
#define STILL_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "capture.h"

/* After a failed capture, lookups serve the previous generation (or EIO) for this long before
 * another capture is attempted, so a store that never settles does not stall every lookup. */
#define GEN_FAIL_BACKOFF 5.0

struct gen;
struct genmgr;

/* uploads_before: realtime after which no reader used an earlier generation (cap_opts).
 * redate_after, redate_until: whole seconds; files of prev dated in between are dated anew
 * (cap_opts), or both 0.
 * recycle: a retired generation in the cache whose database copies may be taken, or NULL. */
typedef int (*gen_capture_fn)(void *arg, const char *name, const char *prev,
			      const char *recycle, double uploads_before, int64_t redate_after,
			      int64_t redate_until, struct cap_stats *st, char *err, size_t errlen);
struct gen_cfg {
	int cachefd;
	double max_age;
	double linger;
	int recycle;               /* keep the last deleted generation for the next capture */
	double kept_until;         /* from gen_clean_cache */
	gen_capture_fn capture;
	void *arg;
	unsigned max_waiters;      /* callers that may wait for a capture at once; 0: any */
};
int gen_init(struct genmgr **out, const struct gen_cfg *cfg);
void gen_destroy(struct genmgr *gm);
/* Remove leftovers of an earlier run from the cache directory: everything but the marker
 * `keep` and the generation an earlier daemon kept at its clean shutdown, when that one is
 * usable. *kept_until: when the kept one stopped being readable (real time), or 0. */
int gen_clean_cache(int cachefd, const char *keep, double *kept_until);
/* The generation `.snapshot` resolves to now, capturing one if needed. Returns a reference
 * (gen_unref), -EIO when there is none to serve, or -EBUSY when cfg.max_waiters callers are
 * waiting for the capture under way already. */
int gen_acquire(struct genmgr *gm, struct gen **out);
/* Capture a new generation now, even if the current one is pinned. 0 or -errno (-EBUSY as
 * gen_acquire). */
int gen_refresh(struct genmgr *gm);
void gen_ref(struct genmgr *gm, struct gen *g);
void gen_unref(struct genmgr *gm, struct gen *g);
/* Count an open handle under g, a file's if `file` (else a directory's); -ESTALE if g was
 * deleted. */
int gen_pin(struct genmgr *gm, struct gen *g, int file);
void gen_unpin(struct genmgr *gm, struct gen *g, int file);
/* gen_unpin of a file's handle, ino its inode number: a file of an older generation that the
 * current one shares is not an overtaking read (see gen.c). */
void gen_unpin_file(struct genmgr *gm, struct gen *g, uint64_t ino);
/* Hold a reader of one of g's files, whose mtime is in the whole second sec, until that second
 * has come (real time; cap_opts.date_ahead dates changes ahead), so that an upload of it is
 * not dated before its mtime: at most a second after the capture (a capture waits for the
 * second the one before dated its changes in), none for a file dated in the past; never
 * longer than g's latest date was away when the capture ended (a clock stepped back).
 * INT64_MAX: g's latest date. */
void gen_hold_reads(const struct gen *g, int64_t sec);
int gen_dead(const struct gen *g);
int gen_fd(const struct gen *g);
unsigned long gen_seq(const struct gen *g);
/* Delete unpinned old generations. Calls on_dead for each before its directory goes.
 * Returns seconds until the next one may become deletable (or a default tick). */
double gen_reap(struct genmgr *gm, void (*on_dead)(struct gen *g));
/* Sequence number of the current generation (0: none); to notice switches. */
unsigned long gen_current_seq(struct genmgr *gm);
/* A readable descriptor of the current generation's root, or -ENOENT (no capture). */
int gen_open_current(struct genmgr *gm);
/* Sleep until woken by gen activity or timeout seconds. */
void gen_wait(struct genmgr *gm, double timeout);
void gen_wake(struct genmgr *gm);
/* "key: value" lines describing the current state. Returns a malloc'd string. Without
 * detailed, the last error is only its kind: the full message may name a private file. */
char *gen_status(struct genmgr *gm, int detailed);

#endif
