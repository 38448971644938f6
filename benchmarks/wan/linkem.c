/*
 * linkem: a two-ended link emulator for the WAN benchmark (bench_wan.py).
 *
 * It opens one TUN device in each of two network namespaces (setns() into each before
 * TUNSETIFF) and forwards every IP packet read from one device into the other, imposing per
 * direction:
 *   - random loss (a seeded xorshift64* generator; lost packets never reach the queue);
 *   - a bottleneck of RATE bit/s with a tail-drop FIFO of QUEUE packets: a packet that finds
 *     QUEUE packets waiting (the one being serialized included) is dropped, otherwise it leaves
 *     the bottleneck at max(now, previous departure) + size * 8 / RATE;
 *   - a one-way DELAY after the bottleneck, plus optional JITTER: a uniform extra delay in
 *     [0, JITTER], delivered first in first out (a packet never overtakes the one before it).
 * Timers are CLOCK_MONOTONIC deadlines on a timerfd in the epoll set, so delivery is accurate to
 * the scheduler's wake-up latency rather than to epoll's milliseconds.
 *
 * Counters (per direction: forwarded, dropped by the queue, dropped by loss, the deepest queue)
 * go as one JSON object to the stats file on SIGUSR1 and at exit (SIGTERM, SIGINT).  "READY" on
 * stdout says both devices exist; the caller then gives them addresses.
 *
 * Build: gcc -O2 -Wall -Werror -o linkem linkem.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 32768 /* packets held per direction (queue + the delay line) */
#define MAXPKT 2048 /* the devices' MTU is 1500: TUN without a vnet header gets no GSO */

struct dir {
    const char *name;
    int in_fd, out_fd;
    /* settings */
    uint64_t rate_bps; /* 0: no rate limit (and no queue) */
    uint64_t delay_ns, jitter_ns;
    uint32_t queue_pkts;
    double loss;
    uint64_t rng;
    /* the ring: [head, tail) are held; [qhead, tail) have not left the bottleneck yet */
    uint8_t (*buf)[MAXPKT];
    uint16_t *len;
    uint64_t *leave_ns;   /* when it has left the bottleneck (serialization done) */
    uint64_t *deliver_ns; /* when it is written into the other device */
    uint64_t head, qhead, tail;
    uint64_t last_leave_ns, last_deliver_ns;
    /* counters */
    uint64_t rx, forwarded, drop_queue, drop_loss, drop_ring, max_queue, bytes_forwarded;
    uint64_t write_errors;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift64s(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double uniform01(uint64_t *s) { return (double)(xorshift64s(s) >> 11) / 9007199254740992.0; }

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int open_tun_in(const char *netns_path, const char *ifname) {
    int ns = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) die(netns_path);
    if (setns(ns, CLONE_NEWNET) < 0) die("setns");
    close(ns);
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", ifname);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    return fd;
}

static void dir_alloc(struct dir *d) {
    d->buf = malloc((size_t)SLOTS * MAXPKT);
    d->len = calloc(SLOTS, sizeof *d->len);
    d->leave_ns = calloc(SLOTS, sizeof *d->leave_ns);
    d->deliver_ns = calloc(SLOTS, sizeof *d->deliver_ns);
    if (!d->buf || !d->len || !d->leave_ns || !d->deliver_ns) die("malloc");
}

/* Read everything the device has, deciding each packet's fate on arrival. */
static void dir_ingress(struct dir *d) {
    for (;;) {
        uint64_t slot = d->tail % SLOTS;
        ssize_t n = read(d->in_fd, d->buf[slot], MAXPKT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            die("read");
        }
        if (n == 0) return;
        uint64_t t = now_ns();
        d->rx++;
        if (d->loss > 0 && uniform01(&d->rng) < d->loss) {
            d->drop_loss++;
            continue;
        }
        while (d->qhead < d->tail && d->leave_ns[d->qhead % SLOTS] <= t) d->qhead++;
        uint64_t queued = d->tail - d->qhead;
        if (d->rate_bps && queued >= d->queue_pkts) {
            d->drop_queue++;
            continue;
        }
        if (d->tail - d->head >= SLOTS) {
            d->drop_ring++;
            continue;
        }
        uint64_t leave = t;
        if (d->rate_bps) {
            uint64_t start = d->last_leave_ns > t ? d->last_leave_ns : t;
            leave = start + ((uint64_t)n * 8ull * 1000000000ull + d->rate_bps - 1) / d->rate_bps;
            d->last_leave_ns = leave;
        }
        uint64_t deliver = leave + d->delay_ns;
        if (d->jitter_ns) deliver += (uint64_t)(uniform01(&d->rng) * (double)d->jitter_ns);
        if (deliver < d->last_deliver_ns) deliver = d->last_deliver_ns; /* FIFO: no reordering */
        d->last_deliver_ns = deliver;
        d->len[slot] = (uint16_t)n;
        d->leave_ns[slot] = leave;
        d->deliver_ns[slot] = deliver;
        d->tail++;
        if (queued + 1 > d->max_queue) d->max_queue = queued + 1;
    }
}

/* Write out every packet due by now. */
static void dir_egress(struct dir *d, uint64_t t) {
    while (d->head < d->tail && d->deliver_ns[d->head % SLOTS] <= t) {
        uint64_t slot = d->head % SLOTS;
        ssize_t w = write(d->out_fd, d->buf[slot], d->len[slot]);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) d->write_errors++;
        else {
            d->forwarded++;
            d->bytes_forwarded += (uint64_t)d->len[slot];
        }
        d->head++;
        if (d->qhead < d->head) d->qhead = d->head;
    }
}

static void dir_json(FILE *f, const struct dir *d) {
    fprintf(f,
            "\"%s\": {\"received\": %llu, \"forwarded\": %llu, \"bytes_forwarded\": %llu, "
            "\"dropped_queue\": %llu, \"dropped_loss\": %llu, \"dropped_ring\": %llu, "
            "\"write_errors\": %llu, \"max_queue\": %llu, \"held\": %llu}",
            d->name, (unsigned long long)d->rx, (unsigned long long)d->forwarded,
            (unsigned long long)d->bytes_forwarded, (unsigned long long)d->drop_queue,
            (unsigned long long)d->drop_loss, (unsigned long long)d->drop_ring,
            (unsigned long long)d->write_errors, (unsigned long long)d->max_queue,
            (unsigned long long)(d->tail - d->head));
}

static void write_stats(const char *path, const struct dir *ab, const struct dir *ba,
                        unsigned long long seq) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "{\"seq\": %llu, ", seq);
    dir_json(f, ab);
    fprintf(f, ", ");
    dir_json(f, ba);
    fprintf(f, "}\n");
    fclose(f);
    rename(tmp, path);
}

static void usage(void) {
    fprintf(stderr,
            "usage: linkem --ns-a PATH --ns-b PATH [--dev NAME] [--stats FILE] [--seed N]\n"
            "              [--rate BPS] [--delay-us US] [--jitter-us US] [--queue PKTS] "
            "[--loss P]\n"
            "              (each setting applies to both directions; --ab-X / --ba-X set one)\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *ns_a = NULL, *ns_b = NULL, *dev = "wan0", *stats = "/dev/null";
    uint64_t seed = 1;
    struct dir ab = {.name = "a_to_b", .queue_pkts = 1000};
    struct dir ba = {.name = "b_to_a", .queue_pkts = 1000};
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        struct dir *only = NULL;
        if (!strncmp(k, "--ab-", 5)) only = &ab, k += 4;
        else if (!strncmp(k, "--ba-", 5)) only = &ba, k += 4;
        else k += 2;
        if (*k == '-') k++; /* "--ab-rate" -> "rate"; "--rate" -> "rate" */
        struct dir *targets[2] = {only ? only : &ab, only ? NULL : &ba};
        if (!strcmp(k, "ns-a")) ns_a = v;
        else if (!strcmp(k, "ns-b")) ns_b = v;
        else if (!strcmp(k, "dev")) dev = v;
        else if (!strcmp(k, "stats")) stats = v;
        else if (!strcmp(k, "seed")) seed = strtoull(v, NULL, 10);
        else {
            for (int j = 0; j < 2; j++) {
                struct dir *d = targets[j];
                if (!d) continue;
                if (!strcmp(k, "rate")) d->rate_bps = strtoull(v, NULL, 10);
                else if (!strcmp(k, "delay-us")) d->delay_ns = strtoull(v, NULL, 10) * 1000ull;
                else if (!strcmp(k, "jitter-us")) d->jitter_ns = strtoull(v, NULL, 10) * 1000ull;
                else if (!strcmp(k, "queue")) d->queue_pkts = (uint32_t)strtoul(v, NULL, 10);
                else if (!strcmp(k, "loss")) d->loss = strtod(v, NULL);
                else usage();
            }
        }
    }
    if (!ns_a || !ns_b) usage();
    /* Two streams from one seed; never zero (xorshift's fixed point). */
    ab.rng = seed * 0x9E3779B97F4A7C15ull + 1;
    ba.rng = (seed + 0x5bd1e995ull) * 0xBF58476D1CE4E5B9ull + 1;
    if (!ab.rng) ab.rng = 1;
    if (!ba.rng) ba.rng = 2;
    if (ab.queue_pkts == 0 || ba.queue_pkts == 0) {
        fprintf(stderr, "linkem: --queue must be at least 1\n");
        return 2;
    }

    int fd_a = open_tun_in(ns_a, dev);
    int fd_b = open_tun_in(ns_b, dev);
    ab.in_fd = fd_a, ab.out_fd = fd_b;
    ba.in_fd = fd_b, ba.out_fd = fd_a;
    dir_alloc(&ab);
    dir_alloc(&ba);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) die("sigprocmask");
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int fds[4] = {fd_a, fd_b, sfd, tfd};
    for (int i = 0; i < 4; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) die("epoll_ctl");
    }
    printf("READY\n");
    fflush(stdout);

    unsigned long long seq = 0;
    uint64_t armed = 0; /* the deadline the timer is set to; 0: disarmed */
    for (;;) {
        struct epoll_event evs[8];
        int n = epoll_wait(ep, evs, 8, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == fd_a) dir_ingress(&ab);
            else if (fd == fd_b) dir_ingress(&ba);
            else if (fd == tfd) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("read timerfd");
                armed = 0;
            } else if (fd == sfd) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                    write_stats(stats, &ab, &ba, ++seq);
                    if (si.ssi_signo != SIGUSR1) return 0;
                }
            }
        }
        uint64_t t = now_ns();
        dir_egress(&ab, t);
        dir_egress(&ba, t);
        uint64_t next = 0;
        if (ab.head < ab.tail) next = ab.deliver_ns[ab.head % SLOTS];
        if (ba.head < ba.tail) {
            uint64_t nb = ba.deliver_ns[ba.head % SLOTS];
            if (!next || nb < next) next = nb;
        }
        if (next != armed) {
            struct itimerspec its;
            memset(&its, 0, sizeof its);
            if (next) {
                its.it_value.tv_sec = (time_t)(next / 1000000000ull);
                its.it_value.tv_nsec = (long)(next % 1000000000ull);
            }
            if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
            armed = next;
        }
    }
}
