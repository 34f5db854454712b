/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The capture engine's internals, shared by its files (capture.c gives the overview): the
 * entries of a capture (struct ent), its state (struct cap), and the functions one step calls in
 * another. Nothing outside fs/engine/cap*.c includes it. */
#ifndef STILL_CAP_INT_H
#define STILL_CAP_INT_H

#include "capture.h"
#include "copy.h"
#include "dbdelta.h"
#include "manifest.h"
#include "sqlcap.h"
#include "util.h"
#include "watch.h"

#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define CAP_LOCK_WAIT 2.0          /* seconds to wait for the first database lock per attempt */
#define CAP_MARK_RELEASE 63 /* the marker put in the event queue at the release */

enum { K_NONE = 0, K_DIR = 'd', K_FILE = 'f', K_DB = 's', K_LINK = 'l', K_SKIP = 'x',
       K_COMPANION = 'c' };
/* DB_WAL_COLD: a -wal but no -shm in use, so no connection is open (every WAL connection
 * keeps a read lock on the -shm's DMS byte; a -shm nobody holds is a crashed writer's, stale):
 * it is held like a rollback database and recovered from a private copy, because even a
 * read-only SQLite connection would create or rebuild the -shm in the store. */
enum { DB_ROLLBACK, DB_WAL, DB_WAL_COLD };

/* What tells a file changed: the parts of a stat that matter, without the rest of its size
 * (an entry per file adds up on large stores). */
struct cap_sig {
	ino_t ino;
	off_t size;
	int64_t mtime_ns, ctime_ns;
};

/* The fields of a struct stat that a capture uses, under the same names: an entry per file
 * adds up on large stores, and a whole struct stat is 144 bytes. (st_nlink is only ever
 * compared with 1: it stops at UINT32_MAX.) */
struct cap_stat {
	dev_t st_dev;
	ino_t st_ino;
	off_t st_size;
	uint32_t st_nlink;
	mode_t st_mode;
	uid_t st_uid;
	gid_t st_gid;
	struct timespec st_atim, st_mtim, st_ctim;
};

/* A plain file's identity as recorded in the manifest (cap_id_format writes it out): kept as
 * numbers, not as the text, which would take a string of its own per file. */
struct cap_id {
	uint64_t dev, ino;
	int64_t size, mtime_ns, ctime_ns;
	uint64_t emap;           /* the file's extent map fingerprint (ent.emap), or 0 */
};
#define CAP_ID_MAX 160 /* room for an identity as text */

/* What only a database entry needs; allocated when an entry is found to be one (cap_as_db). */
struct ent_db {
	struct dd_blocks blk;    /* digests of the staged copy's 1 MiB blocks */
	double synced_at;        /* when the staged copy was last made equal */
	uint64_t synced_pages;   /* pages that pass rewrote */
	/* while a cut is attempted */
	int dirfd, dbfd;
	sqlite3 *db;
	int dbmode;
	int locked, pinned;
	int took_prev;           /* its copy was moved here from the previous snapshot */
	int wal_phase;           /* order of its WAL pin in this attempt, -1 if none */
	int raced;               /* written between its WAL pin and the final marker */
	int wal_seen;            /* not DB_WAL: its -wal changed since it was classified */
	int whdr_ok;             /* whdr holds its WAL-index header as pinned */
	uint8_t whdr[SQ_WAL_HDR];
	char *db_ident;          /* identity taken before the lock */
	char *ident;             /* the identity to record, when the entry's is a database's
				  * (cap_db_finish); see cap_ident_of */
	int cut_clone;           /* a clone of the live file waits in the work dir */
	int cloned;              /* the staged copy is a clone of the live file */
	struct cap_sig cold_sig[2]; /* not DB_WAL: its -wal and -shm when classified */
	struct cap_sig pre_sig;  /* the live file as its early copy began */
	struct cap_sig held_sig; /* not DB_WAL: the live file as our lock was taken */
	struct dd_premap premap; /* live file and staged copy mapped in for the locked compare */
};

/* One per directory, file and symlink of the store, so kept small (about 230 bytes), its path
 * in the capture's arena (struct cap, paths). */
struct ent {
	char *path;              /* relative to the store; "" is the root */
	const char *name;        /* last component, inside path */
	struct ent_db *d;        /* databases (and entries that were one); else NULL */
	struct cp_pending *pend; /* plain files: the last copy, its digest still being computed */
	uint64_t written;        /* bytes the last copy of it stored (holes are not) */
	uint64_t size;
	uint64_t emap;           /* plain files: the fingerprint of the live file's extent map as
				  * copied (cl_map_sig; see cap_map_note), or 0 */
	int64_t mtime_ns;        /* for reused entries: the previous snapshot's */
	struct cap_stat st;      /* source, as copied */
	struct cap_id id;        /* identity to record, if has_id (cap_ident_of) */
	uint8_t digest[32];
	uint32_t parent;
	unsigned dirty_count;
	uint32_t alias;          /* another name of entry `alias`'s file, linked to its copy */
	char kind;               /* K_*; K_NONE until classified, or once gone */
	unsigned dirty : 1, copied : 1, reused : 1, rescan : 1, hot : 1, dbcopied : 1;
	unsigned has_id : 1;
	unsigned precopied : 1;  /* a database copied before the cut; valid while not dirty */
	unsigned staged : 1;     /* a database whose staged copy d->blk describes */
	unsigned has_digest : 1;
	unsigned cloned : 1;     /* a plain file whose copy shares the live file's extents */
	unsigned unwatched : 1;  /* a directory where inotify may miss changes (cap_dir_moved) */
	unsigned newdate : 1;    /* files: another name that reaches it (a hard link, a symlink)
				  * held other bytes in the previous snapshot, or none: its copy,
				  * one inode for all its names, is dated anew; links and
				  * directories: followed already (cap_mark_newdates) */
};

struct cap {
	const struct cap_opts *o;
	struct cap_stats *st;
	int storefd, parentfd, stagefd, workfd, prevfd;
	int wbfd;                /* cap_opts.writeback, or -1 */
	int extfd;               /* cap_opts.extents (O_PATH), or -1 */
	char stage_name[NAME_MAX + 1], work_name[NAME_MAX + 1], dest_name[NAME_MAX + 1];
	struct wt *w;
	struct ent *e;
	size_t n, cap;
	struct ut_arena paths;   /* the entries' paths */
	/* path -> entry: open addressing over entry numbers, the keys being their paths */
	struct { uint32_t *slot; size_t cap, used; } index;
	struct ut_map inodes;    /* "dev:ino" of a file with several names -> the entry copied */
	char **ikeys;            /* the keys of inodes, freed at the end */
	size_t nikeys;
	struct mf prev;
	int have_prev;
	/* event bookkeeping for one cut attempt */
	int overflow;
	int in_attempt, phase, end_phase, broken;
	const char *broken_why;
	const char *stuck;       /* the database whose lock the last attempt could not get */
	const char *step;        /* the phase reported to cap_opts.progress */
	double progress_at;
	uint64_t total_bytes, done_bytes;
	double lock_t0;
	double lock_cpu_s;       /* this attempt: CPU time of database compares under the locks */
	uint64_t lock_faults;    /* and their page faults */
	int64_t cut_ns;
	double last_change;      /* when a plain file or the tree was last seen changing */
	double uploads_before;   /* realtime; see cap_opts */
	int64_t newest_ctime;    /* of anything the scans saw, for the quiet window at start */
	int holding;             /* rollback databases are locked: writers wait on us */
	int no_clone;            /* the snapshot's filesystem cannot clone the store's files */
	int clone_ok;            /* it could clone one (cap_db_premap's probe) */
	double sweep_s;          /* how long the last sweep of every file's stat took */
	const char *sweep_first; /* the first change the last sweep that found one found */
	/* After the release (cap_after): 1 armed, 2 the release marker passed; after_written:
	 * a plain file was written (or made) since. */
	int after_state, after_written, watch_after;
	/* HNSW segments found torn (cap_check_segments): the directory, its files' identity
	 * then, and since when they have been so. */
	struct { size_t dir; uint32_t sig; double since; } torn[16];
	unsigned ntorn;
	/* the snapshot given up to cap_opts.recycle: its databases' copies may be taken */
	int recyfd;
	int have_recy, recy_taken;
	int recy_is_prev;        /* the recycled snapshot is the previous one (stillctl --recycle):
				  * prev is its manifest, recy stays empty */
	int earlier_unread;      /* uploads_before is when the earlier snapshots last changed */
	struct mf recy;          /* of another snapshot: only what cap_recycle may take */
};

extern volatile sig_atomic_t cap_stop; /* set by cap_interrupt */

static inline int64_t cap_ns(struct timespec t) { return ut_ts_ns(t); }

/* cap_files.c: 1 if the live file of copied plain file e, whose extent map had the
 * fingerprint e->emap when it was copied, now lies elsewhere or cannot tell; 0 if e->emap
 * is 0. */
int cap_map_moved(const struct cap *c, const struct ent *e);

/* cap_tree.c */
int cap_openat2(int dirfd, const char *path, int flags);
void cap_keep_stat(struct cap_stat *to, const struct stat *s);
int cap_stat_fresh(int dirfd, const char *name, struct stat *st);
int cap_fstat(int fd, struct cap_stat *to);
/* Narrow st's mode so that no user gets more from it alone than the access ACL of fd's file
 * grants them (a snapshot keeps no ACL), and without the set-ID bits of a file on a nosuid
 * mount. */
void cap_acl_narrow(int fd, struct cap_stat *st);
int cap_lstatat(int dirfd, const char *name, struct cap_stat *to);
char *cap_ident(const struct cap_stat *s, int64_t at);
/* Set e's identity from s as cap_ident would (none when it cannot be trusted at `at`). */
void cap_set_ident(struct ent *e, const struct cap_stat *s, int64_t at);
/* Forget e's identity. */
void cap_clear_ident(struct ent *e);
/* e's identity as text (in buf, CAP_ID_MAX bytes, or a database's own string), or NULL. */
const char *cap_ident_of(const struct ent *e, char *buf);
/* The entry whose path is path: 1 and *idx, or 0. */
int cap_index_get(const struct cap *c, const char *path, size_t *idx);
const char *cap_where(const struct cap *c, const struct ent *e);
int cap_add(struct cap *c, size_t parent, const char *name, char kind, size_t *out);
int cap_as_db(struct ent *e);
int cap_lookup(const struct cap *c, size_t dir, const char *name, size_t *idx);
int cap_is_companion_name(const char *name, size_t *baselen);
int cap_companion_of(const struct cap *c, size_t dir, const char *name, size_t *db);
void cap_unstage(struct cap *c, size_t i);
int cap_rescan(struct cap *c);
int cap_dir_moved(struct cap *c, size_t di);
int cap_same_file_state(const struct cap_stat *a, const struct cap_stat *b);
int cap_is_copy_of(const struct cap *c, size_t p, const struct cap_stat *s);
int cap_alias(struct cap *c, struct ent *e);

/* cap_watch.c */
int cap_drain(struct cap *c);
size_t cap_sweep(struct cap *c, int after_cut);
int cap_writeback(struct cap *c);

/* cap_files.c */
int cap_collect(struct cap *c, struct ent *e);
int cap_collect_all(struct cap *c);
void cap_apply_owner(int fd, const struct cap_stat *s);
int cap_as_recorded(const struct stat *s, const struct mf_entry *pe);
int cap_link_prev(struct cap *c, struct ent *e, const struct mf_entry *pe, int *recorded);
/* 1 if the previous snapshot's pe carries an mtime that an upload of an older snapshot may
 * have overtaken (cap_opts.redate_after/until): it is neither shared nor kept. */
int cap_redate(const struct cap *c, const struct mf_entry *pe);
const struct mf_entry *cap_prev_same(const struct cap *c, const struct ent *e, const char *ident);
int cap_copy_dirty(struct cap *c, int *copied);
int cap_classify_dbs(struct cap *c);
int cap_copy_fd_to_stage(struct cap *c, int src, const char *rel, int digest,
			 struct cp_result *r);

/* cap_db.c */
int cap_precopy_db(struct cap *c, struct ent *e);
void cap_db_release(struct cap *c);
char *cap_db_ident(struct ent *e, int dirfd);
int cap_held_disturbed(struct ent *e);
void cap_held_mark(struct ent *e);
int cap_held_moved(struct ent *e);
int cap_precopy_current(struct cap *c, struct ent *e);
int cap_db_unreadable(struct cap *c, struct ent *e);
int cap_db_prepare(struct cap *c);
void cap_db_premap(struct cap *c);
int cap_db_copy(struct cap *c, struct ent *e);
int cap_db_finish(struct cap *c);
/* Forget database e's clone from an earlier cut attempt, if any. */
void cap_drop_clone(struct cap *c, struct ent *e);

/* cap_cut.c */
int cap_attempt(struct cap *c, double deadline);
int cap_after(struct cap *c);
int cap_check_segments(struct cap *c);

/* cap_publish.c */
int cap_inside_store(const struct cap *c, int dirfd);
int cap_prepare_dest(struct cap *c);
int cap_publish(struct cap *c, double t0);
void cap_remove_stage(struct cap *c);

/* capture.c */
void cap_progress(struct cap *c, int force);
int cap_quiet(struct cap *c, double until);

#endif
