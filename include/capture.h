/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The capture engine: a consistent point-in-time copy of a live store directory.
 * Knows nothing of FUSE; used by stillctl and (in a helper process) by the stillfs daemon. */
#ifndef STILL_CAPTURE_H
#define STILL_CAPTURE_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define CAP_MANIFEST_NAME ".stillfs-manifest"

/* Where a capture is, for a progress line or a status report: plain numbers and a constant
 * string, so that it prints or serializes as it is. */
struct cap_progress {
	const char *phase;        /* "scan" (walking the store), "copy" (the first copy of every
				   * file), "cut" (quiet waits, attempts at a cut, the copies they
				   * need), "publish" (finishing, the manifest, the rename) */
	uint64_t files_done;      /* regular files (incl. databases) copied or shared so far */
	uint64_t files_total;     /* regular files (incl. databases) known so far */
	uint64_t bytes_done;      /* bytes read or shared so far (a file copied again counts again) */
	uint64_t bytes_total;     /* bytes of the plain files the first scan found */
	unsigned retries;         /* cut attempts redone so far */
};

/* Called on the capturing thread: at each change of phase, and meanwhile at most about once a
 * second. It must not call back into the engine. */
typedef void cap_progress_fn(const struct cap_progress *p, void *arg);

struct cap_opts {
	const char *store;        /* live store directory */
	const char *dest;         /* snapshot to create; must not exist; appears atomically */
	const char *previous;     /* earlier snapshot to share unchanged files with, or NULL */
	const char *recycle;      /* earlier snapshot given up: the copies of databases that
				   * changed are moved out of it and updated in place, or NULL */
	double settle_timeout;    /* seconds to find a cut before giving up (default 30) */
	unsigned quiet_ms;        /* files must have been still this long at the cut (default 100) */
	double uploads_before;    /* realtime (s) after which no earlier snapshot of this store was
				   * read by an uploader; 0 means the start of this capture */
	/* Files of `previous` whose mtime's whole second m has redate_after < m <= redate_until
	 * are dated anew, never shared: an upload of an older snapshot, holding other bytes under
	 * their names, may have ended in or after that second (the daemon: a generation read
	 * after a newer one was cut). Both 0: none. */
	int64_t redate_after, redate_until;
	/* Do not wait for the whole second after uploads_before before the cut: date the changed
	 * files in it all the same, ahead of the cut by up to a second, and leave it to the
	 * caller to let no upload read them before it comes (cap_stats.dated_until; the daemon
	 * holds opens of them). 0: wait (stillctl: its caller uploads when it returns). */
	int date_ahead;
	/* The niceness to run at while databases are held, when it is below the one the capture
	 * runs at (a caller that lowered its own priority for the copying: the writers waiting
	 * on our locks must not wait for a CPU too). cap_opts_init sets the calling thread's
	 * niceness then; CAP_NICE_KEEP: never change it. */
	int hold_nice;
	cap_progress_fn *progress; /* progress reports (see cap_progress_fn), or NULL */
	void *progress_arg;       /* passed to progress */
	int quiet;                /* no summary line */
	int sync;                 /* syncfs the snapshot before publishing it */
	/* The root of a FUSE mount of the store (the daemon's own), or NULL: stores through a
	 * shared mapping made through it, of a file without passthrough, wait in its page cache
	 * until the kernel writes them back to the store. Before the first copy and after each
	 * cut (before the stat of every file that judges it), each file writeback_inodes names
	 * is fdatasync'ed through the mount. writeback_inodes(writeback_arg, &ino) sets ino to
	 * an array (malloc'ed) of inode numbers and returns how many, or -errno. */
	const char *writeback;
	ssize_t (*writeback_inodes)(void *arg, uint64_t **ino);
	void *writeback_arg;
	/* Where store is a FUSE mount of a store (the daemon's helper reading through its
	 * mount), that store itself, or NULL: FUSE has no extent maps, so those the capture
	 * compares on XFS (see cap_map_note) are read from the same names below it, of files
	 * with the inode number the mount shows. */
	const char *extents;
};

struct cap_stats {
	char id[64];              /* snapshot id, also in the manifest */
	struct timespec cut;      /* the instant every file in the snapshot reflects */
	double duration_s;        /* whole capture */
	double lock_max_s;        /* longest time any database read lock was held */
	double lock_cpu_s;        /* in that hold: CPU time of the database compares, all threads */
	uint64_t lock_faults;     /* in that hold: their page faults */
	uint64_t files;           /* regular files (incl. databases) in the snapshot */
	uint64_t bytes_copied;    /* bytes written anew */
	uint64_t bytes_linked;    /* bytes shared with --previous (hard link or reflink) */
	uint64_t bytes_cloned;    /* bytes shared with the live store (reflink), neither copied nor
				   * linked */
	unsigned retries;         /* cut attempts that had to be redone */
	unsigned threads;         /* hashing and compare threads (cp_hashers) */
	unsigned recycled;        /* database copies taken over from cap_opts.recycle */
	int64_t dated_until;      /* the latest whole second (real time) a changed file was dated
				   * in: an upload that reads it before then leaves an object dated
				   * before its mtime, which the next aws s3 sync sends again */
};

/* Exit codes shared by stillctl and the daemon's capture helper. */
enum cap_exit {
	CAP_EXIT_OK = 0,
	CAP_EXIT_FAIL = 1,        /* verify found problems / generic failure */
	CAP_EXIT_USAGE = 2,
	CAP_EXIT_UNSETTLED = 3,   /* no consistent cut within the settle timeout */
	CAP_EXIT_IO = 4,          /* I/O error (disk full, unreadable file, ...) */
};

#define CAP_NICE_KEEP 100

void cap_opts_init(struct cap_opts *o);

/* Take a snapshot. Returns 0, or a negative errno (-EAGAIN: could not settle). A one-line
 * reason has been logged on failure, and nothing half-made is left at o->dest. */
int cap_snapshot(const struct cap_opts *o, struct cap_stats *st);

/* Ask a running cap_snapshot to stop and clean up (async-signal-safe). */
void cap_interrupt(void);

/* mode (permission bits) less what the access ACL of fd's file denies some user or group
 * that the bits alone would grant: what a snapshot of it shows, since it keeps no ACL. */
mode_t cap_acl_mode(int fd, mode_t mode);

/* Read the header of DIR's manifest into st. 0 or negative errno. */
int cap_read_stats(const char *dir, struct cap_stats *st);

#endif
