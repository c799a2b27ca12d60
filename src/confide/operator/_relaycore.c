/*
 * confide.operator._relaycore: the relay's hot loop, compiled (ADR 0028).
 *
 * The same loop as the Python engine of confide.operator._relay (the reference: read it
 * first), run by the relay worker's thread with the GIL released. It returns to Python only
 * when the worker's eventfd says commands are queued, or when pairs were closed (their
 * on_closed callbacks are Python's). Every rule of the Python engine is kept:
 *
 *   - backpressure: at most one chunk waits per direction; while it waits, its source is
 *     not read;
 *   - half-close: a 0-byte read is passed on as shutdown(SHUT_WR) once what came before it
 *     is sent; the pair closes when both directions have ended;
 *   - idle timeout: a pair with no byte read or sent for idle_timeout seconds is cut
 *     (checked every min(1 s, idle_timeout / 4));
 *   - an error on either side cuts both.
 *
 * Memory safety:
 *
 *   - Descriptors: add() takes ownership of the two descriptors it is given, whatever
 *     happens (on failure it closes them): the Python side detaches them from their socket
 *     objects first, so exactly one side ever closes a descriptor. The eventfd stays
 *     Python's (registered here, never closed here). No array is indexed by a descriptor:
 *     epoll's data points at the side of its pair.
 *   - Lifetimes: a Pair is a Python object; the core holds a reference to each pair from
 *     add() until the pair's closing was reported to Python, so a pair's memory outlives
 *     any epoll event still queued for it in the same batch (a closed pair's events are
 *     skipped). The core's methods refuse to run while run() is running (it touches the
 *     pairs without the GIL); only Pair.buffered() may be called meanwhile, from any
 *     thread: it reads each of the two sizes with an atomic load (not both at one
 *     instant: a gauge, not a snapshot).
 *   - Lengths: every recv reads at most the chunk buffer's size; a partial send keeps the
 *     unsent tail (at most one chunk) in a buffer of exactly that size, freed when sent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Bounds, as in _relay.py: chunks are at least MIN_CHUNK bytes; MAX_CHUNK bounds the one
 * buffer the core allocates at once. */
#define MIN_CHUNK 4096
#define MAX_CHUNK (64 * 1024 * 1024)
/* Longest wait between two idle sweeps (seconds). */
#define MAX_SWEEP 1.0
/* Events taken from epoll per wait. */
#define MAX_EVENTS 256
/* Full chunks one pump moves before the other pairs get a turn (the pair waits on the
 * ready list, pumped again after the next epoll_wait, which then does not block). */
#define PUMP_BUDGET 16

#define READ_EVENTS (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define WRITE_EVENTS (EPOLLOUT | EPOLLHUP | EPOLLERR)
#define END_EVENTS (EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define MASK (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

/* Why a pair was closed (Python formats the text). */
enum {
    CLOSED_END = 0,
    CLOSED_ABORTED = 1,
    CLOSED_IDLE = 2,
    CLOSED_READ = 3,
    CLOSED_WRITE = 4,
    CLOSED_HALF_CLOSE = 5,
    CLOSED_STOPPING = 6,
};

struct PairObject;

/* One socket of a pair, as epoll's data points at it. */
typedef struct {
    struct PairObject *pair;
    int index; /* 0: the client's socket, 1: the upstream's */
} Side;

/* One direction: bytes read from fd[src] are written to fd[dst]. */
typedef struct {
    int src, dst;
    char *pending;      /* the unsent tail of the last chunk, or NULL */
    size_t pending_off; /* sent so far of it */
    size_t pending_len; /* left to send: written with atomic stores (see buffered()) */
    unsigned char eof, shut, readable, ending, writable;
} Way;

typedef struct CoreObject CoreObject;

typedef struct PairObject {
    PyObject_HEAD
    CoreObject *core; /* borrowed; NULL once the core let the pair go */
    int fd[2];        /* client, upstream; -1 once closed */
    Side side[2];
    Way way[2]; /* 0: up (client -> upstream), 1: down (upstream -> client) */
    double last;
    int closed, reason, error;
    struct PairObject *prev, *next; /* the core's live pairs */
    struct PairObject *next_closed; /* closed, not yet reported */
    struct PairObject *ready_prev, *ready_next; /* on the ready list: its budget ran out */
    int ready;
} PairObject;

struct CoreObject {
    PyObject_HEAD
    int epfd;   /* owned */
    int wakefd; /* Python's eventfd: registered, never closed here */
    char *buffer;
    size_t chunk;
    double idle, sweep_every, next_sweep;
    PairObject *live;
    PairObject *closed_head, *closed_tail;
    PairObject *ready_head, *ready_tail; /* pairs with more to read (FIFO) */
    Py_ssize_t nlive, nready;
    unsigned long long yields; /* budgets that ran out, in all (a statistic) */
    int running;
};

static PyTypeObject PairType;
static PyTypeObject CoreType;

/* The coarse monotonic clock (a few milliseconds of resolution, plenty for idle timeouts of
 * seconds): the vDSO serves it without reading the clock source, where CLOCK_MONOTONIC can
 * cost a system call (a clock source the vDSO cannot read, as on some virtual machines). */
static double
monotonic_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) < 0) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
set_pending_len(Way *w, size_t value)
{
    __atomic_store_n(&w->pending_len, value, __ATOMIC_RELAXED);
}

static void
drop_pending(Way *w)
{
    PyMem_RawFree(w->pending);
    w->pending = NULL;
    w->pending_off = 0;
    set_pending_len(w, 0);
}

/* Close a pair's descriptors and move it from the live list to the closed list (no GIL
 * needed: no Python object is touched but through plain C fields). */
static void
unready(CoreObject *c, PairObject *p)
{
    if (!p->ready) {
        return;
    }
    if (p->ready_prev != NULL) {
        p->ready_prev->ready_next = p->ready_next;
    }
    else {
        c->ready_head = p->ready_next;
    }
    if (p->ready_next != NULL) {
        p->ready_next->ready_prev = p->ready_prev;
    }
    else {
        c->ready_tail = p->ready_prev;
    }
    p->ready_prev = p->ready_next = NULL;
    p->ready = 0;
    c->nready--;
}

static void
mark_ready(CoreObject *c, PairObject *p)
{
    if (p->ready || p->closed) {
        return;
    }
    p->ready = 1;
    p->ready_next = NULL;
    p->ready_prev = c->ready_tail;
    if (c->ready_tail != NULL) {
        c->ready_tail->ready_next = p;
    }
    else {
        c->ready_head = p;
    }
    c->ready_tail = p;
    c->nready++;
    c->yields++;
}

static void
close_pair(CoreObject *c, PairObject *p, int reason, int error)
{
    if (p->closed) {
        return;
    }
    p->closed = 1;
    p->reason = reason;
    p->error = error;
    unready(c, p);
    for (int i = 0; i < 2; i++) {
        if (p->fd[i] >= 0) {
            epoll_ctl(c->epfd, EPOLL_CTL_DEL, p->fd[i], NULL);
            close(p->fd[i]);
            p->fd[i] = -1;
        }
        drop_pending(&p->way[i]);
    }
    if (p->prev != NULL) {
        p->prev->next = p->next;
    }
    else {
        c->live = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
    p->prev = p->next = NULL;
    c->nlive--;
    p->next_closed = NULL;
    if (c->closed_tail != NULL) {
        c->closed_tail->next_closed = p;
    }
    else {
        c->closed_head = p;
    }
    c->closed_tail = p;
}

/* One direction, as _pump in _relay.py; 0 if the pair was closed, 2 if its budget ran out
 * with more to read (the caller puts the pair on the ready list), else 1. */
static int
pump(CoreObject *c, PairObject *p, Way *w, double now)
{
    int src = p->fd[w->src], dst = p->fd[w->dst];
    size_t size = c->chunk;
    char *buffer = c->buffer;
    int budget = PUMP_BUDGET;
    for (;;) {
        if (w->pending_len) {
            if (!w->writable) {
                return 1;
            }
            ssize_t sent = send(dst, w->pending + w->pending_off, w->pending_len, MSG_NOSIGNAL);
            if (sent < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    w->writable = 0;
                    return 1;
                }
                close_pair(c, p, CLOSED_WRITE, errno);
                return 0;
            }
            p->last = now;
            if ((size_t)sent < w->pending_len) {
                w->pending_off += (size_t)sent;
                set_pending_len(w, w->pending_len - (size_t)sent);
                w->writable = 0; /* full: its next space comes as an event */
                return 1;
            }
            drop_pending(w);
        }
        if (w->eof) {
            if (!w->shut) {
                w->shut = 1;
                if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN) {
                    close_pair(c, p, CLOSED_HALF_CLOSE, errno);
                    return 0;
                }
            }
            return 1;
        }
        if (!w->readable) {
            return 1;
        }
        ssize_t count = recv(src, buffer, size, 0);
        if (count < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                w->readable = 0;
                return 1;
            }
            close_pair(c, p, CLOSED_READ, errno);
            return 0;
        }
        if (count == 0) {
            w->eof = 1;
            continue;
        }
        p->last = now;
        if ((size_t)count < size && !w->ending) {
            /* Read short: the socket is drained; data arriving since is a new edge. Not so
             * for an end that came with the data: its edge is spent, read on to it. */
            w->readable = 0;
        }
        ssize_t sent;
        do {
            sent = send(dst, buffer, (size_t)count, MSG_NOSIGNAL); /* optimistic */
        } while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                close_pair(c, p, CLOSED_WRITE, errno);
                return 0;
            }
            sent = 0;
        }
        if (sent < count) {
            size_t left = (size_t)(count - sent);
            char *tail = PyMem_RawMalloc(left);
            if (tail == NULL) {
                close_pair(c, p, CLOSED_WRITE, ENOMEM);
                return 0;
            }
            memcpy(tail, buffer + sent, left);
            w->pending = tail;
            w->pending_off = 0;
            set_pending_len(w, left);
            w->writable = 0;
            return 1;
        }
        if (!w->readable) {
            return 1; /* the common case: all of it read and sent */
        }
        if (--budget == 0) {
            return 2; /* full chunks and more to come: the other pairs' turn */
        }
    }
}

/* Pump both ways of a pair taken off the ready list; as the event path does. */
static void
service(CoreObject *c, PairObject *p, double now)
{
    for (int i = 0; i < 2; i++) {
        Way *w = &p->way[i];
        if (w->readable || w->pending_len || w->eof) {
            int done = pump(c, p, w, now);
            if (done == 0) {
                return;
            }
            if (done == 2) {
                mark_ready(c, p);
            }
        }
    }
    if (p->way[0].shut && p->way[1].shut) {
        close_pair(c, p, CLOSED_END, 0);
    }
}

static void
sweep(CoreObject *c, double now)
{
    PairObject *p = c->live;
    while (p != NULL) {
        PairObject *next = p->next;
        if (now - p->last >= c->idle) {
            close_pair(c, p, CLOSED_IDLE, 0);
        }
        p = next;
    }
}

/* The loop, without the GIL: returns 0 when woken or when pairs were closed, else an errno
 * (a bug: epoll failed). */
static int
relay_loop(CoreObject *c, int *woken)
{
    struct epoll_event events[MAX_EVENTS];
    double now = monotonic_now();
    for (;;) {
        /* `now` is read once per wake-up: after epoll_wait, below. */
        if (now >= c->next_sweep) {
            sweep(c, now);
            c->next_sweep = now + c->sweep_every;
        }
        if (*woken || c->closed_head != NULL) {
            return 0;
        }
        double wait = ceil((c->next_sweep - now) * 1000.0);
        int timeout = wait < 0.0 ? 0 : (wait > 1000.0 * MAX_SWEEP ? (int)(1000.0 * MAX_SWEEP) : (int)wait);
        if (c->ready_head != NULL) {
            timeout = 0; /* pairs wait for their next turn: only look for new events */
        }
        int n = epoll_wait(c->epfd, events, MAX_EVENTS, timeout);
        now = monotonic_now();
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        for (int i = 0; i < n && i < MAX_EVENTS; i++) {
            Side *side = events[i].data.ptr;
            uint32_t mask = events[i].events;
            if (side == NULL) {
                uint64_t count;
                if (read(c->wakefd, &count, sizeof count) < 0 && errno != EAGAIN) {
                    return errno;
                }
                *woken = 1;
                continue;
            }
            PairObject *p = side->pair;
            if (p->closed) {
                continue; /* closed earlier in this batch */
            }
            Way *out_way = &p->way[side->index];
            Way *in_way = &p->way[1 - side->index];
            if (mask & WRITE_EVENTS) {
                in_way->writable = 1;
            }
            if (mask & READ_EVENTS) {
                out_way->readable = 1;
                if (mask & END_EVENTS) {
                    out_way->ending = 1;
                }
                int done = pump(c, p, out_way, now);
                if (done == 0) {
                    continue;
                }
                if (done == 2) {
                    mark_ready(c, p);
                }
            }
            /* What waits for this side (its space came back), and what follows it. */
            if (in_way->pending_len || in_way->eof) {
                int done = pump(c, p, in_way, now);
                if (done == 0) {
                    continue;
                }
                if (done == 2) {
                    mark_ready(c, p);
                }
            }
            if (out_way->shut && in_way->shut) {
                close_pair(c, p, CLOSED_END, 0);
            }
        }
        /* Then one more turn for each pair whose budget ran out (not those put back now). */
        for (Py_ssize_t turns = c->nready; turns > 0 && c->ready_head != NULL; turns--) {
            PairObject *p = c->ready_head;
            unready(c, p);
            service(c, p, now);
        }
    }
}

/* -- Pair -- */

static void
Pair_dealloc(PairObject *self)
{
    /* The core lets a pair go only once closed; close what is left all the same. */
    for (int i = 0; i < 2; i++) {
        if (self->fd[i] >= 0) {
            close(self->fd[i]);
            self->fd[i] = -1;
        }
        PyMem_RawFree(self->way[i].pending);
        self->way[i].pending = NULL;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Pair_buffered(PairObject *self, PyObject *Py_UNUSED(ignored))
{
    size_t up = __atomic_load_n(&self->way[0].pending_len, __ATOMIC_RELAXED);
    size_t down = __atomic_load_n(&self->way[1].pending_len, __ATOMIC_RELAXED);
    return PyLong_FromSize_t(up + down);
}

static PyMethodDef Pair_methods[] = {
    {"buffered", (PyCFunction)Pair_buffered, METH_NOARGS,
     "Bytes the core holds for this pair (at most two chunks); any thread."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PairType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "confide.operator._relaycore.Pair",
    .tp_basicsize = sizeof(PairObject),
    .tp_dealloc = (destructor)Pair_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A pair relayed by a Core (made by Core.add only).",
    .tp_methods = Pair_methods,
};

/* -- Core -- */

static void
close_fd(int fd)
{
    if (fd >= 0) {
        close(fd);
    }
}

/* Let every pair go (dealloc and close()): close the live ones, drop every reference. */
static void
release_pairs(CoreObject *c)
{
    while (c->live != NULL) {
        close_pair(c, c->live, CLOSED_STOPPING, 0);
    }
    while (c->closed_head != NULL) {
        PairObject *p = c->closed_head;
        c->closed_head = p->next_closed;
        p->next_closed = NULL;
        p->core = NULL;
        Py_DECREF(p);
    }
    c->closed_tail = NULL;
}

static void
Core_dealloc(CoreObject *self)
{
    release_pairs(self);
    close_fd(self->epfd);
    self->epfd = -1;
    PyMem_RawFree(self->buffer);
    self->buffer = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"chunk", "idle_timeout", "wake_fd", NULL};
    Py_ssize_t chunk;
    double idle;
    int wakefd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ndi", keywords, &chunk, &idle, &wakefd)) {
        return NULL;
    }
    if (chunk < MIN_CHUNK || chunk > MAX_CHUNK) {
        return PyErr_Format(PyExc_ValueError, "chunk %zd is not in [%d, %d]", chunk, MIN_CHUNK,
                            MAX_CHUNK);
    }
    if (!(idle > 0.0) || !isfinite(idle)) {
        PyErr_SetString(PyExc_ValueError, "idle timeout is not a positive finite number");
        return NULL;
    }
    if (wakefd < 0) {
        return PyErr_Format(PyExc_ValueError, "wake descriptor %d is negative", wakefd);
    }
    CoreObject *self = (CoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->epfd = -1;
    self->wakefd = wakefd;
    self->chunk = (size_t)chunk;
    self->idle = idle;
    self->sweep_every = idle / 4 < MAX_SWEEP ? idle / 4 : MAX_SWEEP;
    self->next_sweep = monotonic_now() + self->sweep_every;
    self->buffer = PyMem_RawMalloc(self->chunk);
    if (self->buffer == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, wakefd, &event) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* The methods below run with the GIL, never while run() is running (it holds no lock on
 * the pairs), nor after close(). */
static int
usable(CoreObject *self)
{
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "the relay core is running");
        return 0;
    }
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the relay core is closed");
        return 0;
    }
    return 1;
}

static int
make_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) {
        return -1;
    }
    return (flags & O_NONBLOCK) ? 0 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static PyObject *
Core_add(CoreObject *self, PyObject *args)
{
    int client, upstream;
    if (!PyArg_ParseTuple(args, "ii", &client, &upstream)) {
        return NULL; /* nothing was taken: the caller still owns what it has */
    }
    /* From here the descriptors are the core's: any failure closes them. */
    int fds[2] = {client, upstream};
    if (!usable(self)) {
        goto fail_closing;
    }
    if (client < 0 || upstream < 0 || client == upstream || client == self->wakefd ||
        upstream == self->wakefd || client == self->epfd || upstream == self->epfd) {
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail_closing;
    }
    for (int i = 0; i < 2; i++) {
        if (make_nonblocking(fds[i]) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail_closing;
        }
    }
    PairObject *p = PyObject_New(PairObject, &PairType);
    if (p == NULL) {
        goto fail_closing;
    }
    /* PyObject_New leaves the fields unset. */
    memset((char *)p + sizeof(PyObject), 0, sizeof(PairObject) - sizeof(PyObject));
    p->core = self;
    p->fd[0] = client;
    p->fd[1] = upstream;
    for (int i = 0; i < 2; i++) {
        p->side[i].pair = p;
        p->side[i].index = i;
        p->way[i].src = i;
        p->way[i].dst = 1 - i;
    }
    p->last = monotonic_now();
    for (int i = 0; i < 2; i++) {
        /* Registering reports what is already ready (the ClientHello). */
        struct epoll_event event = {.events = MASK, .data.ptr = &p->side[i]};
        if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fds[i], &event) < 0) {
            int error = errno;
            if (i == 1) {
                epoll_ctl(self->epfd, EPOLL_CTL_DEL, fds[0], NULL);
            }
            if (error == EEXIST) {
                /* Already registered: the number is another live pair's, not ours to
                 * close (a caller's bug; closing it would cut that pair and leave its
                 * later close to hit a reused number). */
                p->fd[i] = -1;
            }
            Py_DECREF(p); /* its dealloc closes the descriptors it still holds */
            errno = error;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    p->next = self->live;
    if (self->live != NULL) {
        self->live->prev = p;
    }
    self->live = p;
    self->nlive++;
    Py_INCREF(p); /* the core's reference, until the closing is reported */
    return (PyObject *)p;

fail_closing:
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0 && fds[i] != self->wakefd && fds[i] != self->epfd &&
            !(i == 1 && fds[1] == fds[0])) {
            close(fds[i]);
        }
    }
    return NULL;
}

static PyObject *
Core_abort(CoreObject *self, PyObject *arg)
{
    if (!usable(self)) {
        return NULL;
    }
    if (!PyObject_TypeCheck(arg, &PairType)) {
        return PyErr_Format(PyExc_TypeError, "expected a Pair, not %T", arg);
    }
    PairObject *p = (PairObject *)arg;
    if (p->core != self || p->closed) {
        Py_RETURN_FALSE;
    }
    close_pair(self, p, CLOSED_ABORTED, 0);
    Py_RETURN_TRUE;
}

/* The closed pairs, as [(pair, reason, errno)], in the order they closed; the core lets
 * them go. Every item is built before any pair is let go, so on failure (no memory)
 * nothing is lost: every pair stays queued for the next call. */
static PyObject *
take_closed(CoreObject *self)
{
    Py_ssize_t n = 0;
    for (PairObject *p = self->closed_head; p != NULL; p = p->next_closed) {
        n++;
    }
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    Py_ssize_t i = 0;
    for (PairObject *p = self->closed_head; p != NULL; p = p->next_closed, i++) {
        PyObject *item = Py_BuildValue("(Oii)", (PyObject *)p, p->reason, p->error);
        if (item == NULL) {
            Py_DECREF(list); /* the items built so far hold their own references */
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    while (self->closed_head != NULL) {
        PairObject *p = self->closed_head;
        self->closed_head = p->next_closed;
        p->next_closed = NULL;
        p->core = NULL;
        Py_DECREF(p); /* the core's; the list's item holds one */
    }
    self->closed_tail = NULL;
    return list;
}

static PyObject *
Core_run(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!usable(self)) {
        return NULL;
    }
    int woken = 0, error;
    self->running = 1;
    Py_BEGIN_ALLOW_THREADS
    error = relay_loop(self, &woken);
    Py_END_ALLOW_THREADS
    self->running = 0;
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *closed = take_closed(self);
    if (closed == NULL) {
        return NULL;
    }
    PyObject *result = PyTuple_Pack(2, woken ? Py_True : Py_False, closed);
    Py_DECREF(closed);
    return result;
}

static PyObject *
Core_close_all(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!usable(self)) {
        return NULL;
    }
    while (self->live != NULL) {
        close_pair(self, self->live, CLOSED_STOPPING, 0);
    }
    return take_closed(self);
}

static PyObject *
Core_close(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "the relay core is running");
        return NULL;
    }
    if (self->epfd >= 0) {
        release_pairs(self);
        close(self->epfd);
        self->epfd = -1;
    }
    Py_RETURN_NONE;
}

static PyObject *
Core_live(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(self->nlive);
}

static PyObject *
Core_yields(CoreObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->running) { /* run() writes it without the GIL */
        PyErr_SetString(PyExc_RuntimeError, "the relay core is running");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(self->yields);
}

static PyMethodDef Core_methods[] = {
    {"add", (PyCFunction)Core_add, METH_VARARGS,
     "add(client_fd, upstream_fd) -> Pair: relay these descriptors, which the core now owns "
     "(closed on failure too)."},
    {"abort", (PyCFunction)Core_abort, METH_O,
     "abort(pair) -> bool: cut a live pair (reported by the next run())."},
    {"run", (PyCFunction)Core_run, METH_NOARGS,
     "run() -> (woken, closed): relay without the GIL until the wake descriptor is readable "
     "or pairs closed; closed is [(pair, reason, errno)]."},
    {"close_all", (PyCFunction)Core_close_all, METH_NOARGS,
     "close_all() -> closed: cut every live pair; [(pair, reason, errno)]."},
    {"close", (PyCFunction)Core_close, METH_NOARGS,
     "close(): let every pair go and close the epoll descriptor (not the wake descriptor)."},
    {"live", (PyCFunction)Core_live, METH_NOARGS, "live() -> int: pairs relayed now."},
    {"yields", (PyCFunction)Core_yields, METH_NOARGS,
     "yields() -> int: how often a pump's budget ran out and the pair waited its turn."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "confide.operator._relaycore.Core",
    .tp_basicsize = sizeof(CoreObject),
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Core(chunk, idle_timeout, wake_fd): one epoll relaying many pairs.",
    .tp_methods = Core_methods,
    .tp_new = Core_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "confide.operator._relaycore",
    .m_doc = "The relay's hot loop, compiled (see confide.operator._relay and ADR 0028).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__relaycore(void)
{
    if (PyType_Ready(&PairType) < 0 || PyType_Ready(&CoreType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObjectRef(m, "Pair", (PyObject *)&PairType) < 0 ||
        PyModule_AddIntConstant(m, "MIN_CHUNK", MIN_CHUNK) < 0 ||
        PyModule_AddIntConstant(m, "MAX_CHUNK", MAX_CHUNK) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED_END", CLOSED_END) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED_ABORTED", CLOSED_ABORTED) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED_IDLE", CLOSED_IDLE) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED_READ", CLOSED_READ) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED_WRITE", CLOSED_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED_HALF_CLOSE", CLOSED_HALF_CLOSE) < 0 ||
        PyModule_AddIntConstant(m, "CLOSED_STOPPING", CLOSED_STOPPING) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
