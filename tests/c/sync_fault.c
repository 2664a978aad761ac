/*
 * sync_fault: an LD_PRELOAD shim that makes fsync fail on the real disk, for one kind of file.
 *
 *   cc -shared -fPIC -O2 -o libsilasyncfault.so tests/c/sync_fault.c -ldl
 *   LD_PRELOAD=./libsilasyncfault.so SILA_FAULT_ROOT=/abs/workspace SILA_FAULT_KIND=main ... prog
 *
 * It interposes fsync, fdatasync, sync_file_range and syncfs. A call fails (returns -1 with
 * errno EIO, without syncing anything) when all of these hold; otherwise the real call runs:
 *
 *   SILA_FAULT_ROOT  (required) the file descriptor's path, read from /proc/self/fd/<fd>, is
 *                    this directory or below it. Unset or empty: the shim injects nothing.
 *   SILA_FAULT_KIND  the file is of this kind: `main` (path ends in `.sqlite`), `wal` (ends in
 *                    `-wal`), `journal` (ends in `-journal`), `dir` (fstat says directory),
 *                    `any`. Unset or unknown: nothing is injected (and stderr says why).
 *   SILA_FAULT_ARM   the file at this path exists now (checked on every call), so a program
 *                    arms the fault after its setup by creating it. Unset: always armed.
 *   SILA_FAULT_MODE  `once` (default): only the first call that qualifies fails, later ones
 *                    run; `always`: every call that qualifies fails.
 *   sync_file_range  qualifies only when its flags wait (SYNC_FILE_RANGE_WAIT_BEFORE or
 *                    _WAIT_AFTER): a call that only starts writeback never reports errors.
 *
 * Each injected failure appends the line `failed <call> <path>` to SILA_FAULT_LOG, if set
 * (opened with O_APPEND for each line, so the lines of several threads, and of the program
 * itself if it appends to the same file, stay whole and in the order they happened).
 *
 * The environment is read once (pthread_once); the shim is thread-safe.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { KIND_NONE, KIND_MAIN, KIND_WAL, KIND_JOURNAL, KIND_DIR, KIND_ANY };

typedef int (*fd_fn)(int);
typedef int (*range_fn)(int, off64_t, off64_t, unsigned int);

/* Written once by load_config (under pthread_once), read-only afterwards. */
static struct {
    enum kind kind;
    bool always;
    char root[PATH_MAX];
    size_t root_len;
    const char *arm; /* NULL: always armed */
    const char *log; /* NULL: no log */
    fd_fn real_fsync;
    fd_fn real_fdatasync;
    fd_fn real_syncfs;
    range_fn real_sync_file_range;
} cfg;

static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;

/* Set by the one failure of `once` mode. */
static atomic_bool fired;

/* The next definition of `name` (libc's) in `*fn`. dlsym returns an object pointer and ISO C
 * leaves converting one to a function pointer undefined, so its bytes are copied (POSIX
 * guarantees the two have the same representation). */
_Static_assert(sizeof(void *) == sizeof(fd_fn) && sizeof(void *) == sizeof(range_fn),
               "function pointers are object-pointer sized");
static void next_symbol(const char *name, void *fn) {
    void *sym = dlsym(RTLD_NEXT, name);
    memcpy(fn, &sym, sizeof sym);
}

static void load_config(void) {
    next_symbol("fsync", &cfg.real_fsync);
    next_symbol("fdatasync", &cfg.real_fdatasync);
    next_symbol("syncfs", &cfg.real_syncfs);
    next_symbol("sync_file_range", &cfg.real_sync_file_range);

    cfg.kind = KIND_NONE;
    const char *root = getenv("SILA_FAULT_ROOT");
    if (root == NULL || root[0] == '\0') {
        return;
    }
    size_t len = strlen(root);
    if (len >= sizeof cfg.root) {
        fprintf(stderr, "sync_fault: SILA_FAULT_ROOT is too long; injecting nothing\n");
        return;
    }
    memcpy(cfg.root, root, len + 1);
    /* "/a/b/" and "/a/b" are the same root; "/" becomes "", which every absolute path is under. */
    while (len > 0 && cfg.root[len - 1] == '/') {
        cfg.root[--len] = '\0';
    }
    cfg.root_len = len;

    const char *mode = getenv("SILA_FAULT_MODE");
    if (mode == NULL || strcmp(mode, "once") == 0) {
        cfg.always = false;
    } else if (strcmp(mode, "always") == 0) {
        cfg.always = true;
    } else {
        fprintf(stderr, "sync_fault: unknown SILA_FAULT_MODE '%s' (once, always); injecting nothing\n", mode);
        return;
    }

    const char *arm = getenv("SILA_FAULT_ARM");
    cfg.arm = (arm != NULL && arm[0] != '\0') ? arm : NULL;
    const char *log = getenv("SILA_FAULT_LOG");
    cfg.log = (log != NULL && log[0] != '\0') ? log : NULL;

    const char *kind = getenv("SILA_FAULT_KIND");
    static const struct {
        const char *name;
        enum kind kind;
    } kinds[] = {
        {"main", KIND_MAIN}, {"wal", KIND_WAL}, {"journal", KIND_JOURNAL},
        {"dir", KIND_DIR},   {"any", KIND_ANY},
    };
    for (size_t i = 0; kind != NULL && i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(kind, kinds[i].name) == 0) {
            cfg.kind = kinds[i].kind;
            return;
        }
    }
    fprintf(stderr,
            "sync_fault: unknown SILA_FAULT_KIND '%s' (main, wal, journal, dir, any); "
            "injecting nothing\n",
            kind == NULL ? "(unset)" : kind);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Whether `fd` is a file of the configured kind under the root; its path goes to `path`. */
static bool eligible(int fd, char path[PATH_MAX]) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, PATH_MAX - 1);
    if (n < 0) {
        return false;
    }
    path[n] = '\0';
    /* Under the root: the root itself or a path below it ("/a/bc" is not under "/a/b"). */
    if (strncmp(path, cfg.root, cfg.root_len) != 0) {
        return false;
    }
    if (path[cfg.root_len] != '/' && path[cfg.root_len] != '\0') {
        return false;
    }
    switch (cfg.kind) {
    case KIND_MAIN:
        return ends_with(path, ".sqlite");
    case KIND_WAL:
        return ends_with(path, "-wal");
    case KIND_JOURNAL:
        return ends_with(path, "-journal");
    case KIND_DIR: {
        struct stat st;
        return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    }
    case KIND_ANY:
        return true;
    case KIND_NONE:
        break;
    }
    return false;
}

static void log_failure(const char *call, const char *path) {
    if (cfg.log == NULL) {
        return;
    }
    char line[PATH_MAX + 64];
    int n = snprintf(line, sizeof line, "failed %s %s\n", call, path);
    if (n < 0) {
        return;
    }
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    int fd = open(cfg.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return;
    }
    /* One write: O_APPEND keeps the line whole among other appenders. Errors are ignored. */
    ssize_t written = write(fd, line, len);
    (void)written;
    close(fd);
}

/* Whether this call of `call` on `fd` is to fail; if so, logs it and sets errno to EIO.
 * Otherwise leaves errno as the caller had it. */
static bool inject(const char *call, int fd) {
    pthread_once(&cfg_once, load_config);
    if (cfg.kind == KIND_NONE) {
        return false;
    }
    int saved = errno;
    char path[PATH_MAX];
    bool fail = eligible(fd, path) && (cfg.arm == NULL || access(cfg.arm, F_OK) == 0) &&
                (cfg.always || !atomic_exchange(&fired, true));
    if (fail) {
        log_failure(call, path);
    }
    errno = fail ? EIO : saved;
    return fail;
}

/* A real function dlsym did not find (a libc without syncfs, say): fail as the kernel would. */
static int missing(void) {
    errno = ENOSYS;
    return -1;
}

int fsync(int fd) {
    if (inject("fsync", fd)) {
        return -1;
    }
    return cfg.real_fsync != NULL ? cfg.real_fsync(fd) : missing();
}

int fdatasync(int fd) {
    if (inject("fdatasync", fd)) {
        return -1;
    }
    return cfg.real_fdatasync != NULL ? cfg.real_fdatasync(fd) : missing();
}

int syncfs(int fd) {
    if (inject("syncfs", fd)) {
        return -1;
    }
    return cfg.real_syncfs != NULL ? cfg.real_syncfs(fd) : missing();
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
    /* Only a waiting call reports writeback errors; starting writeback never fails here. */
    bool waits = (flags & (SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER)) != 0;
    if (waits && inject("sync_file_range", fd)) {
        return -1;
    }
    pthread_once(&cfg_once, load_config);
    return cfg.real_sync_file_range != NULL ? cfg.real_sync_file_range(fd, offset, nbytes, flags) : missing();
}
