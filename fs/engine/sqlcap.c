/* SPDX-License-Identifier: GPL-2.0-or-later */
/* SQLite-specific parts of a capture: recognising databases, holding them still, copying. */
#include "sqlcap.h"
#include "capture.h"
#include "dbdelta.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SQ_MMAP_MAX "2147418112" /* SQLite's own default limit (SQLITE_MAX_MMAP_SIZE) */

/* SQLite's lock bytes (os_unix.c): one page at 1 GiB that no page ever occupies. */
#define SQ_PENDING_BYTE 0x40000000
#define SQ_RESERVED_BYTE (SQ_PENDING_BYTE + 1)
#define SQ_SHARED_FIRST (SQ_PENDING_BYTE + 2)
#define SQ_SHARED_SIZE 510

static const uint8_t sq_journal_magic[8] = { 0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7 };

int sq_is_header(const uint8_t head[16])
{
	return memcmp(head, "SQLite format 3", 16) == 0;
}

static int sq_ofd(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	return fcntl(fd, cmd, &fl) < 0 ? -errno : 0;
}

static void sq_pause(unsigned *us)
{
	struct timespec ts = { 0, (long)*us * 1000 };
	nanosleep(&ts, NULL);
	if (*us < 2000)
		*us *= 2;
}

int sq_lock_shared(int fd, double timeout)
{
	double deadline = ut_now() + timeout;
	unsigned us = 100;
	for (;;) {
		/* SQLite's protocol: a reader must hold PENDING briefly so a writer that is waiting
		 * for EXCLUSIVE (it holds PENDING) is not starved by a stream of new readers. */
		int rc = sq_ofd(fd, F_OFD_SETLK, F_RDLCK, SQ_PENDING_BYTE, 1);
		if (rc == 0) {
			rc = sq_ofd(fd, F_OFD_SETLK, F_RDLCK, SQ_SHARED_FIRST, SQ_SHARED_SIZE);
			sq_ofd(fd, F_OFD_SETLK, F_UNLCK, SQ_PENDING_BYTE, 1);
			if (rc == 0)
				return 0;
		}
		if (rc != -EAGAIN && rc != -EACCES)
			return rc;
		if (ut_now() >= deadline)
			return -EAGAIN;
		sq_pause(&us);
	}
}

void sq_unlock(int fd)
{
	sq_ofd(fd, F_OFD_SETLK, F_UNLCK, SQ_SHARED_FIRST, SQ_SHARED_SIZE);
}

int sq_writer_active(int dbfd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SQ_RESERVED_BYTE,
			    .l_len = 1 };
	if (fcntl(dbfd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

int sq_journal_is_hot(int dirfd, const char *name, int dbfd)
{
	char jname[4096];
	struct stat st;
	uint8_t magic[8];

	if (snprintf(jname, sizeof jname, "%s-journal", name) >= (int)sizeof jname)
		return -ENAMETOOLONG;
	if (fstatat(dirfd, jname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof magic)
		return 0;
	/* A live writer holds RESERVED while its journal exists; then the journal is not hot. */
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SQ_RESERVED_BYTE,
			    .l_len = 1 };
	if (fcntl(dbfd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	if (fl.l_type != F_UNLCK)
		return 0;
	int jfd = openat(dirfd, jname, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (jfd < 0)
		return errno == ENOENT ? 0 : -errno;
	ssize_t n = pread(jfd, magic, sizeof magic, 0);
	close(jfd);
	return n == (ssize_t)sizeof magic && memcmp(magic, sq_journal_magic, sizeof magic) == 0;
}

int sq_companion_ok(const struct stat *db, const struct stat *c)
{
	if (!S_ISREG(c->st_mode))
		return 0;
	int oth = (c->st_mode & S_IROTH) != 0;
	int grp = oth || (c->st_gid == db->st_gid && (c->st_mode & S_IRGRP));
	/* (The owner of another user's companion is taken to be in the database's group.) */
	int own = c->st_uid == db->st_uid ? db->st_uid == 0 || (c->st_mode & S_IRUSR) : grp;
	if ((db->st_mode & S_IRGRP) && !grp)
		return 0;
	if ((db->st_mode & S_IROTH) && !oth)
		return 0;
	return own;
}

/* 1 if path names a companion of a database beside it (NAME-wal, -journal or -shm, with NAME
 * a regular file) that its readers could not read (sq_companion_ok); 0 otherwise. */
static int sq_foreign_companion(const char *path, int fd)
{
	static const char *sfx[] = { "-wal", "-journal", "-shm" };
	char base[4200];
	struct stat db, c;
	size_t len = strlen(path);
	for (unsigned k = 0; k < 3; k++) {
		size_t n = strlen(sfx[k]);
		if (len <= n || len - n >= sizeof base || strcmp(path + len - n, sfx[k]))
			continue;
		memcpy(base, path, len - n);
		base[len - n] = 0;
		if (lstat(base, &db) < 0 || !S_ISREG(db.st_mode) || fstat(fd, &c) < 0)
			return 0;
		c.st_mode = cap_acl_mode(fd, c.st_mode); /* an ACL's denials count */
		return !sq_companion_ok(&db, &c);
	}
	return 0;
}

/* SQLite URIs need %-escapes for characters that mean something in a URI. */
static int sq_uri(const char *path, const char *query, char *out, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	const char *pre = "file:";
	for (const char *p = pre; *p; p++)
		if (o < len)
			out[o++] = *p;
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		if (o + 3 >= len)
			return -ENAMETOOLONG;
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr("/-_.~", *p)) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	int n = snprintf(out + o, len - o, "?%s", query);
	return n < 0 || (size_t)n >= len - o ? -ENAMETOOLONG : 0;
}

/* A VFS that takes "/proc/self/fd/N/name" literally. The unix VFS would resolve the magic
 * link to the store's path, which may be covered by our own mount. It never writes the store:
 * see sq_open_file and sq_open_ro. */
static sqlite3_vfs sq_vfs, *sq_vfs_base;
static pthread_once_t sq_vfs_once = PTHREAD_ONCE_INIT;
static int sq_vfs_ok;

static int sq_full_pathname(sqlite3_vfs *vfs, const char *name, int nout, char *out)
{
	struct stat st;
	(void)vfs;
	if (name[0] != '/' || (int)strlen(name) >= nout)
		return SQLITE_CANTOPEN;
	if (lstat(name, &st) == 0 && S_ISLNK(st.st_mode))
		return SQLITE_CANTOPEN; /* never follow a symlink in the store */
	strcpy(out, name);
	return SQLITE_OK;
}

/* Every named file a connection opens is the live store's: read-only, never created. A
 * read-only connection still asks for its -wal read-write and to be created; given a
 * read-only one, SQLite reads the WAL as a reader that may not write, and a -wal that is
 * gone makes the read fail (SQLITE_CANTOPEN) instead of leaving an empty one behind.
 * Temporary files (no name, or not the database's own) are SQLite's, elsewhere. */
static int sq_open_file(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
			int *out)
{
	const int store = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL |
			  SQLITE_OPEN_SUPER_JOURNAL;
	if (name && (flags & store))
		flags = (flags & ~(SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				   SQLITE_OPEN_EXCLUSIVE | SQLITE_OPEN_DELETEONCLOSE)) |
			SQLITE_OPEN_READONLY;
	(void)vfs;
	return sq_vfs_base->xOpen(sq_vfs_base, name, f, flags, out);
}

/* SQLite deletes a -wal beside an empty database file when it opens it, and the WAL files
 * after a checkpoint on close (which sq_open_ro turns off): not in the live store. */
static int sq_delete(sqlite3_vfs *vfs, const char *name, int syncdir)
{
	(void)vfs;
	(void)name;
	(void)syncdir;
	return SQLITE_IOERR_DELETE;
}

/* Running as root, the unix VFS gives every -wal, -journal and -shm it opens the owner of its
 * database, so that one it has just created stays usable by that owner. Even a chown to the
 * owner a file has changes its ctime, which is a change to the live store; a file opened
 * read-only was not created by SQLite. The unix VFS's system calls are shared by all its
 * connections, so this holds for all of them. */
static int sq_fchown(int fd, uid_t uid, gid_t gid)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0 && (fl & O_ACCMODE) == O_RDONLY)
		return 0;
	return fchown(fd, uid, gid);
}

/* The unix VFS opens a database, its -wal, -journal and -shm without O_NONBLOCK: a user who
 * may write beside a database could put a fifo at one of those names, and the open would wait
 * for a writer that never comes, holding the capture (and everything waiting for it) forever.
 * A lease on the file would hold it for lease-break-time. Every open is made without waiting,
 * and only a regular file or a directory (SQLite opens the database's directory to sync it)
 * is kept; O_NONBLOCK is then cleared. */
static int sq_open_sys(const char *path, int flags, int mode)
{
	struct stat st;
	int fd = open(path, flags | O_NONBLOCK, mode);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
		close(fd);
		errno = ENXIO;
		return -1;
	}
	if (S_ISREG(st.st_mode) && sq_foreign_companion(path, fd)) {
		close(fd);
		errno = EACCES;
		return -1;
	}
	if (!(flags & O_NONBLOCK))
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

static void sq_vfs_init(void)
{
	sq_vfs_base = sqlite3_vfs_find("unix");
	if (!sq_vfs_base || !sq_vfs_base->xSetSystemCall ||
	    sq_vfs_base->xSetSystemCall(sq_vfs_base, "fchown", (sqlite3_syscall_ptr)sq_fchown) ||
	    sq_vfs_base->xSetSystemCall(sq_vfs_base, "open", (sqlite3_syscall_ptr)sq_open_sys))
		return;
	sq_vfs = *sq_vfs_base;
	sq_vfs.zName = "stillfs-literal";
	sq_vfs.pNext = NULL;
	sq_vfs.xFullPathname = sq_full_pathname;
	sq_vfs.xOpen = sq_open_file;
	sq_vfs.xDelete = sq_delete;
	sq_vfs_ok = sqlite3_vfs_register(&sq_vfs, 0) == SQLITE_OK;
}

int sq_open_ro(int dirfd, const char *name, sqlite3 **db)
{
	char path[4200], uri[3 * sizeof path + 32];
	pthread_once(&sq_vfs_once, sq_vfs_init);
	*db = NULL;
	if (!sq_vfs_ok)
		return -ENOSYS;
	/* readonly_shm: the -shm is opened and mapped read-only, so that this connection never
	 * writes the WAL index. As such a reader it cannot record its read mark there: it reads
	 * under an existing mark below the last commit (which only keeps a checkpoint from going
	 * past that mark while it reads), and fails with SQLITE_READONLY_* where it would have to
	 * build or repair the index. Without another connection holding the -shm it reads the
	 * -wal into private memory (SQLite's heap-memory index). */
	if (snprintf(path, sizeof path, "/proc/self/fd/%d/%s", dirfd, name) >= (int)sizeof path ||
	    sq_uri(path, "readonly_shm=1", uri, sizeof uri))
		return -ENAMETOOLONG;
	int rc = sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX |
				 SQLITE_OPEN_URI, "stillfs-literal");
	/* The last connection to close tries to checkpoint and delete the WAL files. */
	if (rc == SQLITE_OK)
		rc = sqlite3_db_config(*db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	if (rc != SQLITE_OK) {
		sqlite3_close(*db);
		*db = NULL;
		return -EIO;
	}
	sqlite3_extended_result_codes(*db, 1);
	return 0;
}

int sq_begin_read(sqlite3 *db, double timeout)
{
	sqlite3_stmt *st = NULL;
	sqlite3_busy_timeout(db, (int)(timeout * 1000));
	int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_OK)
		return 0;
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		rc = -EBUSY;
		break;
	case SQLITE_READONLY:  /* hot journal or WAL recovery that needs a writer */
	case SQLITE_CANTOPEN:  /* -wal vanished between our look and the open */
		rc = -EAGAIN;
		break;
	default:
		/* The caller ends it, after saying why: a ROLLBACK now would clear the message. */
		return -EIO;
	}
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

int sq_reads_wal(sqlite3 *db)
{
	sqlite3_stmt *st = NULL;
	int wal = -EIO;
	if (sqlite3_prepare_v2(db, "PRAGMA main.journal_mode", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(st, 0);
		wal = mode && !strcmp(mode, "wal");
	}
	sqlite3_finalize(st);
	return wal;
}

int sq_wal_header(sqlite3 *db, uint8_t out[SQ_WAL_HDR])
{
	sqlite3_file *f = NULL;
	void volatile *region = NULL;
	if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK || !f ||
	    !f->pMethods || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
		return -ENOTSUP;
	/* Region 0, not extended: the index exists once any connection has used the WAL. */
	int rc = f->pMethods->xShmMap(f, 0, 32 * 1024, 0, &region);
	if ((rc != SQLITE_OK && rc != SQLITE_READONLY) || !region) /* (a -shm we may only read) */
		return -ENOTSUP;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	const volatile uint8_t *h = region;
	for (int i = 0; i < SQ_WAL_HDR; i++)
		out[i] = h[i];
	return 0;
}

/* ---- backups into an earlier copy ----
 * A VFS over "unix" for the destination of a backup into an existing copy: a page whose bytes
 * the copy holds already is not written again, so bringing a large copy up to date writes
 * only what changed, not the whole file; and each write makes the 1 MiB blocks it touches
 * invalid, so that only those are hashed again. The blocks of the main database file opened
 * on this thread while sq_delta_ctx is set are the ones kept up to date. */
struct sq_delta_file {
	sqlite3_file base;          /* pMethods: sq_delta_io */
	struct dd_blocks *blk;      /* NULL: not the tracked file, every write goes through */
	uint64_t *written;
	sqlite3_file *real;         /* the unix VFS's file, in the same allocation */
	/* The tracked file mapped as it was opened, so that the pager's reads and our compares
	 * cost no system call and no copy (a read per page was most of a capture). Only the
	 * first `valid` bytes are read through it: writes past them grow the file elsewhere. */
	const uint8_t *map;
	size_t maplen, valid, touched;
};

/* Drop the pages we read from our page tables now and then (they stay in the page cache), so
 * that a large copy does not count as our resident memory. */
#define SQ_DROP_EVERY (16u << 20)

static const uint8_t *sq_d_at(struct sq_delta_file *d, sqlite3_int64 off, int amt)
{
	if (!d->map || off < 0 || amt <= 0 || (uint64_t)off + (uint64_t)amt > d->valid)
		return NULL;
	d->touched += (size_t)amt;
	if (d->touched >= SQ_DROP_EVERY) {
		madvise((void *)(uintptr_t)d->map, d->maplen, MADV_DONTNEED);
		d->touched = 0;
	}
	return d->map + off;
}

/* Where the real file starts: after ours, suitably aligned. */
#define SQ_DELTA_HDR ((sizeof(struct sq_delta_file) + 15) / 16 * 16)

static __thread struct { struct dd_blocks *blk; uint64_t *written; } sq_delta_ctx;
static sqlite3_vfs sq_delta_vfs, *sq_unix_vfs;
static pthread_once_t sq_delta_once = PTHREAD_ONCE_INIT;
static int sq_delta_ok;

static sqlite3_file *sq_real(sqlite3_file *f) { return ((struct sq_delta_file *)f)->real; }

static int sq_d_close(sqlite3_file *f)
{
	struct sq_delta_file *d = (struct sq_delta_file *)f;
	if (d->map)
		munmap((void *)(uintptr_t)d->map, d->maplen);
	d->map = NULL;
	return sq_real(f)->pMethods->xClose(sq_real(f));
}

static int sq_d_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
	const uint8_t *m = sq_d_at((struct sq_delta_file *)f, off, amt);
	if (m) {
		memcpy(buf, m, (size_t)amt);
		return SQLITE_OK;
	}
	return sq_real(f)->pMethods->xRead(sq_real(f), buf, amt, off);
}

static int sq_d_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
	struct sq_delta_file *d = (struct sq_delta_file *)f;
	const uint8_t *m = d->blk ? sq_d_at(d, off, amt) : NULL;
	if (m && memcmp(m, buf, (size_t)amt) == 0)
		return SQLITE_OK;
	if (d->blk && !m && amt > 0 && amt <= 65536) {
		uint8_t have[65536];
		if (d->real->pMethods->xRead(d->real, have, amt, off) == SQLITE_OK &&
		    memcmp(have, buf, (size_t)amt) == 0)
			return SQLITE_OK;
	}
	int rc = d->real->pMethods->xWrite(d->real, buf, amt, off);
	if (rc == SQLITE_OK && d->blk) {
		uint64_t end = (uint64_t)off + (uint64_t)amt;
		if (end > d->blk->size && dd_resize(d->blk, end))
			return SQLITE_NOMEM;
		dd_invalidate(d->blk, (uint64_t)off, (uint64_t)amt);
		*d->written += (uint64_t)amt;
	}
	return rc;
}

static int sq_d_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	struct sq_delta_file *d = (struct sq_delta_file *)f;
	if (size >= 0 && (uint64_t)size < d->valid)
		d->valid = (size_t)size; /* before: a mapped page past the end would SIGBUS */
	int rc = d->real->pMethods->xTruncate(d->real, size);
	if (rc == SQLITE_OK && d->blk && (uint64_t)size < d->blk->size &&
	    dd_resize(d->blk, (uint64_t)size))
		return SQLITE_NOMEM;
	return rc;
}

static int sq_d_sync(sqlite3_file *f, int flags)
{
	return sq_real(f)->pMethods->xSync(sq_real(f), flags);
}

static int sq_d_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return sq_real(f)->pMethods->xFileSize(sq_real(f), size);
}

static int sq_d_lock(sqlite3_file *f, int level)
{
	return sq_real(f)->pMethods->xLock(sq_real(f), level);
}

static int sq_d_unlock(sqlite3_file *f, int level)
{
	return sq_real(f)->pMethods->xUnlock(sq_real(f), level);
}

static int sq_d_reserved(sqlite3_file *f, int *out)
{
	return sq_real(f)->pMethods->xCheckReservedLock(sq_real(f), out);
}

static int sq_d_control(sqlite3_file *f, int op, void *arg)
{
	/* A size hint may grow the file by other means than xWrite: not for the tracked file. */
	if (((struct sq_delta_file *)f)->blk && op == SQLITE_FCNTL_SIZE_HINT)
		return SQLITE_NOTFOUND;
	return sq_real(f)->pMethods->xFileControl(sq_real(f), op, arg);
}

static int sq_d_sector(sqlite3_file *f)
{
	return sq_real(f)->pMethods->xSectorSize(sq_real(f));
}

static int sq_d_device(sqlite3_file *f)
{
	return sq_real(f)->pMethods->xDeviceCharacteristics(sq_real(f));
}

/* Version 1: no shared memory and no mapping, so no WAL and no write behind our back. */
static const sqlite3_io_methods sq_delta_io = {
	1, sq_d_close, sq_d_read, sq_d_write, sq_d_truncate, sq_d_sync, sq_d_size, sq_d_lock,
	sq_d_unlock, sq_d_reserved, sq_d_control, sq_d_sector, sq_d_device,
	NULL, NULL, NULL, NULL, NULL, NULL
};

/* Map the tracked file (our private copy: nobody else changes its size). Without a mapping,
 * reads and compares go through the real file. */
static void sq_d_map(struct sq_delta_file *d, const char *name)
{
	struct stat st;
	int fd = open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size <= SIZE_MAX) {
		void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (m != MAP_FAILED) {
			d->map = m;
			d->maplen = d->valid = (size_t)st.st_size;
		}
	}
	close(fd);
}

static int sq_delta_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
			 int *out)
{
	struct sq_delta_file *d = (struct sq_delta_file *)f;
	(void)vfs;
	d->real = (sqlite3_file *)((char *)d + SQ_DELTA_HDR);
	d->real->pMethods = NULL;
	int rc = sq_unix_vfs->xOpen(sq_unix_vfs, name, d->real, flags, out);
	if (rc != SQLITE_OK) {
		if (d->real->pMethods)
			d->real->pMethods->xClose(d->real);
		f->pMethods = NULL;
		return rc;
	}
	d->blk = flags & SQLITE_OPEN_MAIN_DB ? sq_delta_ctx.blk : NULL;
	d->written = sq_delta_ctx.written;
	d->map = NULL;
	d->maplen = d->valid = d->touched = 0;
	if (d->blk && name)
		sq_d_map(d, name);
	f->pMethods = &sq_delta_io;
	return SQLITE_OK;
}

static void sq_delta_init(void)
{
	sq_unix_vfs = sqlite3_vfs_find("unix");
	if (!sq_unix_vfs)
		return;
	sq_delta_vfs = *sq_unix_vfs;
	sq_delta_vfs.zName = "stillfs-delta";
	sq_delta_vfs.pNext = NULL;
	sq_delta_vfs.szOsFile = (int)SQ_DELTA_HDR + sq_unix_vfs->szOsFile;
	sq_delta_vfs.xOpen = sq_delta_open;
	sq_delta_ok = sqlite3_vfs_register(&sq_delta_vfs, 0) == SQLITE_OK;
}

static int sq_backup(sqlite3 *src, const char *dst_path, int flags, const char *vfs)
{
	sqlite3 *dst = NULL;
	int rc = sqlite3_open_v2(dst_path, &dst, SQLITE_OPEN_READWRITE | flags, vfs);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(dst, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", NULL, NULL,
				  NULL);
	/* The live database is read through SQLite's own mapping of it, not a read(2) per page:
	 * half the CPU time. A page past a truncation meanwhile (or one the disk failed to read)
	 * reads as zeros (dd_zerofill), and the copy is made again at the next attempt (so it
	 * is after a -shm truncated since cap_attempt began). */
	int mapped = 0, shrank = 0;
	if (rc == SQLITE_OK && dd_zerofill_begin() == 0) {
		mapped = 1;
		sqlite3_exec(src, "PRAGMA main.mmap_size=" SQ_MMAP_MAX, NULL, NULL, NULL);
	}
	if (rc == SQLITE_OK) {
		sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
		if (!b) {
			rc = sqlite3_errcode(dst);
		} else {
			rc = sqlite3_backup_step(b, -1);
			int frc = sqlite3_backup_finish(b);
			rc = rc == SQLITE_DONE ? frc : rc;
		}
	}
	if (mapped) {
		sqlite3_exec(src, "PRAGMA main.mmap_size=0", NULL, NULL, NULL);
		shrank = dd_zerofill_end();
	}
	sqlite3_close(dst);
	if (shrank)
		return -EAGAIN; /* whatever rc says, it was made from zeros: not published */
	if (rc != SQLITE_OK)
		log_err("backup to %s: %s", dst_path, dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
	return rc == SQLITE_OK ? 0 : ((rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO);
}

int sq_backup_to(sqlite3 *src, const char *dst_path)
{
	return sq_backup(src, dst_path, SQLITE_OPEN_CREATE, NULL);
}

int sq_backup_into(sqlite3 *src, const char *dst_path, struct dd_blocks *b, uint64_t *written)
{
	pthread_once(&sq_delta_once, sq_delta_init);
	if (!sq_delta_ok)
		return -ENOSYS;
	*written = 0;
	sq_delta_ctx.blk = b;
	sq_delta_ctx.written = written;
	int rc = sq_backup(src, dst_path, 0, "stillfs-delta");
	sq_delta_ctx.blk = NULL;
	sq_delta_ctx.written = NULL;
	return rc;
}

int sq_finish_copy(const char *path, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
	/* Reading rolls back a hot journal beside the private copy; switching the journal mode
	 * folds a WAL into the file and rewrites header bytes 18-19 to 1. */
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=DELETE", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "delete"))
			rc = SQLITE_ERROR;
		else if (rc == SQLITE_ROW)
			rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return rc == SQLITE_OK ? 0 : ((rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO);
}

int sq_integrity(const char *path, char *err, size_t errlen)
{
	char uri[8192];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int ret = 0;
	if (sq_uri(path, "mode=ro&immutable=1", uri, sizeof uri))
		return -ENAMETOOLONG;
	int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check(1)", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			const char *msg = (const char *)sqlite3_column_text(st, 0);
			if (!msg || strcmp(msg, "ok")) {
				snprintf(err, errlen, "%s", msg ? msg : "integrity_check failed");
				ret = -EBADMSG;
			}
			rc = SQLITE_OK;
		}
	}
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		ret = -EBADMSG;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return ret;
}
