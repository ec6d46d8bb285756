/* The minimal echo child of the benchmark (benches/pool.rs builds it with cc -O2): copies
 * stdin to stdout with raw read/write, no buffering and no parsing, until EOF. The floor
 * measured with it is the physical cost of a pipe round trip; our Rust test tool does more
 * work per line (a BufRead, a match on the command, a flush). */
#include <unistd.h>

int main(void) {
    static char buf[65536];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n <= 0) return 0;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(1, buf + off, (size_t)(n - off));
            if (w <= 0) return 1;
            off += w;
        }
    }
}
