/* The relay floor of the benchmark's service rows (benches/pool.rs builds it with
 * cc -O2 -pthread): the least a service can cost, with nothing but raw system calls. Each
 * caller is a process of its own with a Unix stream socket to a relay thread of this
 * process, which passes each line to its own echo child over pipes and the reply back:
 * caller -> relay -> child -> relay -> caller, blocking read and write everywhere, no
 * framing, no parsing. The service does the same hops with a protocol and a pool.
 *
 *   relay lat  CHILD LINE WARMUP N 1          one caller process: per-call samples
 *   relay tput CHILD LINE WARMUP N CALLERS    CALLERS caller processes, N calls each
 *
 * Prints one JSON object: {"samples_us": [...], "wall_us": W, "calls": C}, where wall_us
 * runs from the common start (after every caller's warm-up) to the last caller's end. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CALLERS 64

static char line[4096];
static size_t len;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) die("write");
        p += w;
        n -= (size_t)w;
    }
}

/* Read exactly n bytes; 0 at EOF before the first byte, else 1. */
static int read_all(int fd, char *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r == 0 && got == 0) return 0;
        if (r <= 0) die("read");
        got += (size_t)r;
    }
    return 1;
}

struct relay {
    int sock, to_child, from_child;
};

/* Pass each line from the caller to the child and the reply back, until the caller
 * closes. */
static void *relay_main(void *arg) {
    struct relay *r = arg;
    char buf[sizeof line];
    while (read_all(r->sock, buf, len)) {
        write_all(r->to_child, buf, len);
        read_all(r->from_child, buf, len);
        write_all(r->sock, buf, len);
    }
    close(r->to_child);
    return NULL;
}

static pid_t spawn_child(const char *path, int *to, int *from) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl(path, path, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *to = in[1];
    *from = out[0];
    return pid;
}

/* A caller process: warm up, say so, wait for the start, make n round trips, send the
 * samples (doubles) to the parent. */
static void caller(int sock, int ready, int go, int results, long warmup, long n) {
    char buf[sizeof line];
    for (long i = 0; i < warmup; i++) {
        write_all(sock, line, len);
        read_all(sock, buf, len);
    }
    write_all(ready, "r", 1);
    if (!read_all(go, buf, 1)) die("go");
    double *samples = malloc(sizeof(double) * (size_t)n);
    for (long i = 0; i < n; i++) {
        double t = now_us();
        write_all(sock, line, len);
        read_all(sock, buf, len);
        samples[i] = now_us() - t;
    }
    write_all(results, (const char *)samples, sizeof(double) * (size_t)n);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: relay lat|tput CHILD LINE WARMUP N CALLERS\n");
        return 2;
    }
    const char *child = argv[2];
    len = (size_t)snprintf(line, sizeof line, "%s\n", argv[3]);
    if (len >= sizeof line) die("line too long");
    long warmup = atol(argv[4]), n = atol(argv[5]);
    int callers = atoi(argv[6]);
    if (callers < 1 || callers > MAX_CALLERS || n < 1) die("arguments");

    struct relay relays[MAX_CALLERS];
    pthread_t threads[MAX_CALLERS];
    pid_t kids[MAX_CALLERS], procs[MAX_CALLERS];
    int results[MAX_CALLERS], ready[2], go[2];
    if (pipe2(ready, O_CLOEXEC) || pipe2(go, O_CLOEXEC)) die("pipe");
    for (int i = 0; i < callers; i++) {
        int sv[2], res[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) die("socketpair");
        if (pipe2(res, O_CLOEXEC)) die("pipe");
        kids[i] = spawn_child(child, &relays[i].to_child, &relays[i].from_child);
        relays[i].sock = sv[0];
        procs[i] = fork();
        if (procs[i] < 0) die("fork");
        if (procs[i] == 0) caller(sv[1], ready[1], go[0], res[1], warmup, n);
        close(sv[1]);
        close(res[1]);
        results[i] = res[0];
    }
    /* The threads after every fork, so that each caller is a copy of a one-thread process. */
    for (int i = 0; i < callers; i++) {
        if (pthread_create(&threads[i], NULL, relay_main, &relays[i])) die("pthread_create");
    }
    close(go[0]);
    char c;
    for (int i = 0; i < callers; i++) read_all(ready[0], &c, 1);
    double t0 = now_us();
    for (int i = 0; i < callers; i++) write_all(go[1], "g", 1);
    double *samples = malloc(sizeof(double) * (size_t)n * (size_t)callers);
    for (int i = 0; i < callers; i++) {
        read_all(results[i], (char *)(samples + (size_t)i * (size_t)n), sizeof(double) * (size_t)n);
    }
    double wall = now_us() - t0;
    for (int i = 0; i < callers; i++) {
        waitpid(procs[i], NULL, 0);
        pthread_join(threads[i], NULL);
        waitpid(kids[i], NULL, 0);
    }
    printf("{\"samples_us\": [");
    for (size_t i = 0; i < (size_t)n * (size_t)callers; i++) {
        printf(i ? ",%.3f" : "%.3f", samples[i]);
    }
    printf("], \"wall_us\": %.1f, \"calls\": %ld}\n", wall, n * callers);
    return 0;
}
