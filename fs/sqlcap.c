/* SQLite-specific parts of a capture: recognising databases, holding them still, copying. */
#include "sqlcap.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* A VFS that takes "/proc/self/fd/N/name" literally. The unix VFS would resolve the magic
 * link to the store's path, which may be covered by our own mount. */
static sqlite3_vfs sq_vfs;
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

static void sq_vfs_init(void)
{
	sqlite3_vfs *base = sqlite3_vfs_find("unix");
	if (!base)
		return;
	sq_vfs = *base;
	sq_vfs.zName = "stillfs-literal";
	sq_vfs.pNext = NULL;
	sq_vfs.xFullPathname = sq_full_pathname;
	sq_vfs_ok = sqlite3_vfs_register(&sq_vfs, 0) == SQLITE_OK;
}

int sq_open_ro(int dirfd, const char *name, sqlite3 **db)
{
	char path[4200];
	pthread_once(&sq_vfs_once, sq_vfs_init);
	if (!sq_vfs_ok)
		return -ENOSYS;
	if (snprintf(path, sizeof path, "/proc/self/fd/%d/%s", dirfd, name) >= (int)sizeof path)
		return -ENAMETOOLONG;
	int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
				 "stillfs-literal");
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
	sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_READONLY:  /* hot journal or WAL recovery that needs a writer */
	case SQLITE_CANTOPEN:  /* -wal vanished between our look and the open */
		return -EAGAIN;
	default:
		return -EIO;
	}
}

int sq_backup_to(sqlite3 *src, const char *dst_path)
{
	sqlite3 *dst = NULL;
	int rc = sqlite3_open_v2(dst_path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(dst, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", NULL, NULL,
				  NULL);
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
	if (rc != SQLITE_OK)
		log_err("backup to %s: %s", dst_path, dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
	sqlite3_close(dst);
	return rc == SQLITE_OK ? 0 : ((rc & 0xff) == SQLITE_FULL ? -ENOSPC : -EIO);
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
