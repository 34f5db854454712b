/* SPDX-License-Identifier: GPL-2.0-or-later */
/* stillfs daemon internals, shared by the modules in fs/daemon/.
 *
 * Modules and prefixes: main.c (sf_: options, mount, housekeeping), observe.c (ob_: status, metrics,
 * systemd notification), node.c (nd_: the inode
 * table), ops.c (op_: entries and attributes), dir.c (dr_: directory handles), file.c (fh_:
 * file handles), lock.c (lk_: lock forwarding), helper.c (hp_: the capture helper process). */
#ifndef STILLFS_DAEMON_H
#define STILLFS_DAEMON_H

#include "fusecompat.h"   /* libfuse, and what it lacks */

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "capture.h"
#include "gen.h"

#define SF_SNAPDIR ".snapshot"
#define SF_STATUS ".stillfs-status"
#define SF_STATUS_JSON ".stillfs-status.json"
#define SF_XATTR_REFRESH "user.stillfs.refresh"
/* Snapshot files never change under a nodeid (nodeids are per generation), so the kernel may
 * keep their entries, attributes and pages for as long as it likes. */
#define SF_SNAP_TIMEOUT 86400.0
/* Live entries and attributes, where inotify tells us of direct changes (inval.c): the bound
 * on staleness after a lost event queue. */
#define SF_LIVE_TIMEOUT 10.0

/* Names at the root that belong to stillfs, not to the store (which they shadow). */
static inline int sf_reserved(const char *name)
{
	return !strcmp(name, SF_SNAPDIR) || !strcmp(name, SF_STATUS) ||
	       !strcmp(name, SF_STATUS_JSON);
}

/* ND_SNAPDIR is `.snapshot` itself: a fixed directory whose contents are the current
 * generation's root. Generations are chosen below it (lookups) and when it is opened. */
enum nd_kind { ND_LIVE, ND_SNAP, ND_SNAPDIR, ND_STATUS };

struct lk_owner;

/* A place in a circular list of open handles (file.c, dir.c), kept so that a handle the kernel
 * never released is still reachable at exit; the caller holds the list's lock. */
struct sf_link {
	struct sf_link *next, *prev;
};

struct node {
	struct node *hnext;
	uint64_t nlookup;          /* kernel references (sf.mu); freed at 0 unless static */
	/* O_PATH descriptor of the backing file, or -1 while closed. Use it only between
	 * nd_pin and nd_unpin (or under sf.mu): an unpinned one may be closed at any time. */
	int fd;
	struct file_handle *handle; /* reopens fd once closed; NULL: fd is never closed */
	struct sf_link lru;        /* in node.c's list of closable descriptors (sf.mu) */
	unsigned pins;             /* nd_pin calls not yet undone (sf.mu) */
	unsigned gone : 1;         /* forgotten while pinned: the last nd_unpin frees it */
	dev_t dev;
	ino_t ino;
	mode_t type;               /* S_IFMT bits */
	enum nd_kind kind;
	unsigned is_static : 1;    /* the root and the status file: never freed */
	unsigned is_shm : 1;       /* first looked up as "*-shm": an SQLite WAL index */
	unsigned is_manifest : 1;  /* a generation's manifest (nd_manifest_attr) */
	struct gen *gen;           /* ND_SNAP: the generation it belongs to (holds a reference) */
	struct lk_owner *owners;   /* POSIX lock owners with an OFD descriptor (sf.mu) */
	/* Passthrough (passthru.c, under its own mutex): the backing id while pt_users > 0,
	 * its access mode, and how many handles are page-cached instead. */
	int pt_id;
	int pt_acc;
	unsigned pt_users;
	unsigned pt_other;
	unsigned pt_failed : 1;
	int wd;                    /* live directory: its inotify watch (inval.c, sf.mu), or 0 */
	unsigned iv_ok : 1;        /* changes to it are seen by a watch: the kernel may cache it */
	uint64_t used;             /* sf.use_clock at its last lookup (sf.mu): pruning order */
};

enum pt_mode { PT_NONE, PT_BACKED, PT_CACHED };

static inline void sf_link_in(struct sf_link *list, struct sf_link *l)
{
	l->next = list->next;
	l->prev = list;
	list->next->prev = l;
	list->next = l;
}

/* A link never put in a list is left alone. */
static inline void sf_link_out(struct sf_link *l)
{
	if (!l->next)
		return;
	l->next->prev = l->prev;
	l->prev->next = l->next;
	l->next = l->prev = NULL;
}

/* An open file (file.c). Directories have their own handle (dir.c). */
struct fh {
	struct sf_link all;        /* in fh_all */
	uid_t uid;                 /* charged for it (sf_fd_charge) */
	gid_t gid;                 /* the opener's: writes the kernel makes on its own (fh_write_buf) */
	int fd;
	int writable;              /* opened for writing: a close may have errors to report */
	enum pt_mode pt;           /* how the kernel serves its reads and writes */
	int shm_counted;           /* counted in sf.shm_handles */
	int wb_counted;            /* counted in sf.wb_handles */
	struct node *node;
	char *text;                /* a status file: its contents, made at open */
	size_t len;
};

struct sf_opts {
	char *store;               /* absolute, resolved before mounting */
	char *mountpoint;
	char *cache;
	char *cache_opt;           /* -o cache= as given */
	int snapdir_visible;
	double max_age;
	double linger;
	double settle;
	char *snapdir_opt;
	int no_passthrough;
	int no_live_cache;
	int no_recycle;
	unsigned long max_nodes;
	unsigned long max_user_fds;
	int capture_nice;
	char *metrics_file;        /* -o metrics_file=: a Prometheus textfile, or NULL */
	int max_threads_given;     /* -o max_threads= (libfuse's): else SF_DEFAULT_THREADS */
	/* Numbers as given, checked by sf_validate: libfuse's own parsing takes "10abc" as 10. */
	char *max_age_opt, *linger_opt, *settle_opt, *max_nodes_opt, *max_user_fds_opt;
	char *capture_nice_opt;
};

struct sf {
	struct fuse_session *se;
	struct sf_opts o;
	int storefd;               /* O_PATH of the store, opened before mounting */
	int cachefd;               /* the cache directory */
	int cachelockfd;           /* flock'ed marker: one daemon per cache */
	double kept_until;         /* an earlier daemon's generation is in the cache (gen_init) */
	unsigned threads;          /* request threads at most (max_threads) */
	int cache_made, cache_marked; /* this run created the cache directory / its marker */
	int procfd;                /* /proc/self/fd, to reopen O_PATH descriptors */
	struct node root;
	struct node snapdir;
	struct stat snapdir_st;    /* its attributes, fixed at mount time */
	struct node status;
	struct node status_json;   /* the same as JSON */
	struct genmgr *gm;
	pthread_mutex_t mu;        /* node table, nlookup counts, lock owners */
	struct node **tab;
	size_t tabsize;
	size_t nnodes;
	size_t node_budget;        /* most nodes kept before pruning (and waiting, see nd_budget_wait) */
	size_t fd_budget;          /* most node descriptors open at once */
	size_t nfds;               /* node descriptors open now (sf.mu) */
	uint64_t use_clock;        /* counts lookups (sf.mu) */
	pthread_cond_t budget_cv;  /* a node was freed at the budget (sf.mu, CLOCK_MONOTONIC) */
	uid_t uid;
	gid_t gid;
	struct timespec started;
	atomic_uint shm_handles;   /* open page-cached (not passthrough) handles on live "-shm" */
	atomic_uint wb_handles;    /* and on any live file, opened for writing (hp_capture) */
	atomic_int exiting;
};

extern struct sf sf;

/* main.c: descriptors of handles and lock owners, per user. A user other than root (or the
 * daemon's own) holds at most -o max_user_fds of them, and all of them together leave root a
 * reserve, so no user can make another's opens fail. 0, or -EMFILE / -ENFILE. */
int sf_fd_charge(uid_t uid);
void sf_fd_uncharge(uid_t uid);
/* Descriptors charged now (handles and lock owners) and the descriptor limit. */
void sf_fd_counts(size_t *charged, size_t *limit);

/* observe.c: the status file, the metrics textfile, systemd notification. */
/* Take $NOTIFY_SOCKET (before any thread or helper exists). */
void ob_init(void);
/* Send one sd_notify message ("READY=1", ...) if systemd asked for them. */
void ob_notify(const char *msg);
/* The status text (json: as JSON); detailed: the last error in full. Malloc'd, or NULL. */
char *ob_status(int detailed, int json, size_t *len);
/* Where -o metrics_file goes: base in the directory dir, opened now. 0, or -1 after one
 * line on stderr. */
int ob_metrics_open(const char *dir, const char *base);
/* From the housekeeper: after a capture finished (or if force), rewrite the metrics file
 * and tell systemd the new status. */
void ob_tick(int force);

/* node.c */
int nd_init(void);
/* 1 if nodes can close their descriptors and reopen them by file handle (name_to_handle_at
 * and open_by_handle_at work on the store and the cache): then fd_budget bounds them. */
int nd_handles_init(void);
/* Keep n->fd open (reopened if it was closed) until nd_unpin. 0 or -errno (n not pinned). */
int nd_pin(struct node *n);
void nd_unpin(struct node *n);
struct node *nd_of(fuse_ino_t ino);
fuse_ino_t nd_id(const struct node *n);
/* Look NAME up below the live or snapshot directory PARENT; on success the node's lookup
 * count is raised and *e is ready for fuse_reply_entry. */
int nd_lookup(struct node *parent, const char *name, struct fuse_entry_param *e);
/* The same below the root of generation g (a child of `.snapshot`). */
int nd_lookup_gen(struct gen *g, const char *name, struct fuse_entry_param *e);
/* The node of an already-open O_PATH descriptor (consumed), lookup count raised. */
int nd_from_fd(int fd, enum nd_kind kind, struct gen *g, struct fuse_entry_param *e);
void nd_forget(struct node *n, uint64_t nlookup);
int nd_stat(struct node *n, struct stat *st);
void nd_snap_attr(struct stat *st);
void nd_fill_timeouts(const struct node *n, struct fuse_entry_param *e);
double nd_attr_timeout(const struct node *n);
int nd_reopen(struct node *n, int flags);
/* sf.mu held: the live node of a backing inode, or NULL. */
struct node *nd_find_live(dev_t dev, ino_t ino);
/* n pinned. */
void nd_procpath(const struct node *n, char *buf, size_t len);
/* After generation g was deleted: free the space of its files that only we still hold. */
void nd_reclaim(struct gen *g);
/* -ESTALE if n belongs to a deleted generation. */
int nd_check(const struct node *n);

/* ops.c */
void op_register(struct fuse_lowlevel_ops *ops);
/* Make the calling thread's file-system accesses those of req's caller (a root daemon only);
 * 0 or -errno. op_cred_drop restores the daemon's own, and must come before the reply. */
int op_cred_take(fuse_req_t req);
void op_cred_drop(void);
/* Only the caller's file-system uid and gid (no supplementary groups, which cost a read of
 * /proc): enough for writes on a descriptor already open, which a file system charges by
 * them (root's reserved blocks), never checks against the caller's groups. */
int op_cred_take_ids(fuse_req_t req);
/* The same with given ids (those of a handle's opener). */
int op_cred_take_ids_of(uid_t uid, gid_t gid);
/* After a write, truncate or open with O_TRUNC of live node n (pinned, or fd >= 0 its open
 * handle's descriptor) that the kernel asked to clear set-ID bits of (FUSE_HANDLE_KILLPRIV_V2:
 * a caller without CAP_FSETID), clear them with the daemon's own credentials. */
void op_kill_suidgid(const struct node *n, int fd);

/* dir.c */
void dr_register(struct fuse_lowlevel_ops *ops);
/* The generation listed by a `.snapshot` handle that the calling process holds (with a
 * reference), or NULL: names below `.snapshot` then resolve in it, not in the current one. */
struct gen *dr_snapdir_gen(pid_t pid);

/* file.c */
void fh_register(struct fuse_lowlevel_ops *ops);

/* passthru.c: which opens the kernel serves by passthrough (fusecompat.h: how). */
/* Decide how the kernel serves handle h of n, opened by req (sets h->pt, may set
 * fi->direct_io). Returns the backing id for fc_reply_open/create, or 0. pt_detach undoes it
 * at close. */
int pt_attach(fuse_req_t req, struct node *n, struct fh *h, struct fuse_file_info *fi);
void pt_detach(fuse_req_t req, struct fh *h);

/* inval.c: kernel caching of the live view, invalidated from inotify events of the store. */
/* Start the thread; watch = 0: no caching, only the node budget's pruning. */
int iv_start(struct fuse_session *se, int watch);
/* A node was added: prune if the table nears its budget (sf.mu held). */
void iv_node_added(void);
void iv_stop_thread(void);
void iv_watch(struct node *n);
void iv_watch_locked(struct node *n);        /* sf.mu held */
void iv_unwatch_locked(struct node *n);      /* sf.mu held */
/* 1 if the kernel may cache n's entry and attributes. */
int iv_cached(const struct node *n);
/* child was looked up below parent: cacheable if a watch sees its changes. */
void iv_mark(struct node *child, const struct node *parent);

/* lock.c */
void lk_register(struct fuse_lowlevel_ops *ops);
int lk_init(void);
/* Drop every lock OWNER holds on n (POSIX: any close releases all of the process's locks). */
void lk_drop_owner(struct node *n, uint64_t owner);
void lk_free_all(struct node *n);
/* Drop the locks of owners whose last lock request came through this handle (at release). */
void lk_drop_handle(struct node *n, const void *handle);
/* The thread that answers blocking lock requests once granted or interrupted (after
 * daemonizing); lk_stop answers those still waiting with EINTR. */
int lk_start(void);
void lk_stop(void);
/* How many blocking lock requests wait now. */
unsigned lk_waiting(void);

/* helper.c */
int hp_main(int argc, char **argv);
int hp_capture(void *arg, const char *name, const char *prev, const char *recycle,
	       double uploads_before, int64_t redate_after, int64_t redate_until,
	       struct cap_stats *st, char *err, size_t errlen);
void hp_kill(void);
/* "last_capture: ok|failed|none" and, while a capture runs, its progress_* lines. */
void hp_report(FILE *f);
/* 1 if thread tid belongs to the capture helper now running (it reads the store through the
 * mount when a WAL index is open there, and must never reach .snapshot: its own capture is
 * what .snapshot would wait for). */
int hp_is_helper(pid_t tid);
/* 1 if tid is the capture helper's main thread (the one that uses the mount); no system call. */
int hp_is_helper_pid(pid_t tid);

/* loop.c */
/* Serve the session's requests on up to max_threads threads, a share of them per user, until
 * it exits (unmount or a stop signal). 0, or -errno of a failed read of /dev/fuse. */
int lp_run(struct fuse_session *se, unsigned max_threads);
/* request_threads, requests_parked* and requests_refused status lines. */
void lp_report(FILE *f);

#endif
