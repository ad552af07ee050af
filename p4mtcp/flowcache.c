/* p4mtcp._flowcache: the NIC's flow cache, a fast path in front of the P4 program's mirror.
 *
 * A TCP flow's first segment runs through the Python mirror of the P4 program
 * (dataplane/pipeline.py); once the cache admits the flow (admit: at once for a batch's first
 * few new flows, else at its second miss), the mirror also says what its lookups decided
 * (NicPipeline.process_one): the egress port, the MACs to write, whether to fill both
 * checksums (a frame from a core) or to verify them (a frame from the network), and the counter
 * cells it counted. dataplane/flowcache.py installs that here under the flow's key, and the
 * flow's later segments are forwarded from the cache.
 *
 * Why the key is enough: a frame is served from the cache only if it has the "fast shape", the
 * exact conditions under which the program reaches its table lookups for a TCP segment (IPv4,
 * IHL 5, not a fragment, TCP, lengths that pass admission, and, from the network, checksums that
 * verify). For such a frame every lookup reads only the ingress port, the addresses and the
 * ports, which are the key. Every other frame, and the first of each flow, goes to the mirror.
 * tests/test_flowcache.py holds the two paths to the same frames and counters, byte for byte,
 * with every byte of the headers mutated.
 *
 * The cache never decides on its own: a table write clears it (dataplane/flowcache.py), and
 * counts stay here only until the end of the batch, when drain() hands them to the counters.
 * The checksum is the RFC 1071 sum of p4mtcp._csum, reached through its capsule.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef uint64_t (*word_sum_mod_fn)(const unsigned char *, Py_ssize_t, int *);
static word_sum_mod_fn word_sum_mod;

/* Offsets in an Ethernet + IPv4 (IHL 5) + TCP frame. */
#define ETH_TYPE 12
#define IP 14
#define IP_TOTAL_LEN (IP + 2)
#define IP_FLAGS_FRAG (IP + 6)
#define IP_PROTO (IP + 9)
#define IP_CSUM (IP + 10)
#define IP_SRC (IP + 12)
#define IP_DST (IP + 16)
#define TCP (IP + 20)
#define TCP_OFFSET (TCP + 12)
#define TCP_CSUM (TCP + 16)
#define FAST_MIN (TCP + 20)
#define ETH_MIN_FRAME 60
#define PROBES 8
#define FRESH_PER_BATCH 8   /* new flows a batch may cache on their first miss (admit) */

/* A flow: what every lookup of a fast-shape frame reads. */
typedef struct {
    uint32_t src, dst;
    uint16_t sport, dport, in_port;
} Key;

typedef struct {
    Key key;
    uint8_t used, fill_checksums, set_src;
    uint8_t listed;     /* in the dirty list (at most once, whatever entry the slot holds) */
    uint8_t dst_mac[6], src_mac[6];
    PyObject *egress;   /* the egress port as an int: the key of the caller's out dict */
    PyObject *record;   /* handed back with the counts by drain() */
    uint64_t packets, bytes;  /* counted since the last drain */
    uint32_t used_at;         /* the cache's clock when the entry last forwarded a frame */
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    uint32_t *seen;      /* hashes of flows that missed once, in sets of 4 (admit) */
    uint32_t *dirty;     /* slots with counts since the last drain */
    uint32_t ndirty, mask, entries, seen_turn;
    uint32_t clock;      /* batches drained: the age of an entry */
    int fresh;           /* flows still admitted on their first miss in this batch */
    int cpu_port;
    unsigned long long hits, inserts, evictions, clears;
} FlowCache;

static inline uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The conditions of the program's parser and admission (pipeline.py, NicParser and
 * _ipv4_admission) under which a frame reaches the TCP lookups: IPv4 version 4 with IHL 5, no
 * fragment offset and no MF flag, protocol TCP, total length at least 20 and within the frame
 * (only a minimum-size frame may carry padding after it), data offset 5 or more and within
 * the segment. */
static int fast_shape(const unsigned char *f, Py_ssize_t n)
{
    if (n < FAST_MIN || be16(f + ETH_TYPE) != 0x0800 || f[IP] != 0x45 ||
        (be16(f + IP_FLAGS_FRAG) & 0x3FFF) || f[IP_PROTO] != 6)
        return 0;
    Py_ssize_t total = be16(f + IP_TOTAL_LEN), end = total + IP;
    if (total < 20 || end > n || (end < n && n > ETH_MIN_FRAME))
        return 0;
    unsigned doff = f[TCP_OFFSET] >> 4;
    return doff >= 5 && (Py_ssize_t)doff * 4 <= total - 20;
}

/* csum16 of words summing to `sum_mod` (mod 0xFFFF) with `field` left out; the words left are
 * never all zero (IPv4 version 4, the TCP pseudo-header's protocol 6), so a zero residue is
 * 0xFFFF: pipeline._csum_without. */
static inline uint16_t csum_without(uint64_t sum_mod, uint16_t field)
{
    uint64_t r = (sum_mod + 0xFFFF - field % 0xFFFF) % 0xFFFF;
    return (uint16_t)~(r ? r : 0xFFFF);
}

static uint16_t ipv4_csum(const unsigned char *f)
{
    int nz;
    return csum_without(word_sum_mod(f + IP, 20, &nz), be16(f + IP_CSUM));
}

/* Over the pseudo-header, the TCP header and everything after it in the frame (BMv2 sums the
 * Ethernet padding too): pipeline._tcp_checksum. */
static uint16_t tcp_csum(const unsigned char *f, Py_ssize_t n)
{
    int nz;
    uint32_t src = be32(f + IP_SRC), dst = be32(f + IP_DST);
    uint64_t pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 +
                      ((be16(f + IP_TOTAL_LEN) - 20) & 0xFFFF);
    uint64_t sum = word_sum_mod(f + TCP, n - TCP, &nz) + pseudo % 0xFFFF;
    return csum_without(sum % 0xFFFF, be16(f + TCP_CSUM));
}

/* The flow of a fast-shape frame that came in on in_port. */
static inline Key key_of(int in_port, const unsigned char *f)
{
    Key k = {be32(f + IP_SRC), be32(f + IP_DST), be16(f + TCP), be16(f + TCP + 2),
             (uint16_t)in_port};
    return k;
}

/* The key's 112 bits mixed so that every bit moves every bit of the result (a multiply alone
 * leaves the low bits depending on the low bits only: flows whose ports differ by a multiple of
 * the table size would share a slot). The final steps are MurmurHash3's 64-bit finalizer. */
static inline uint32_t key_hash(const Key *k)
{
    uint64_t h = ((uint64_t)k->src << 32 | k->dst) ^
                 (((uint64_t)k->sport << 32 | (uint64_t)k->dport << 16 | k->in_port)
                  * 0x9E3779B97F4A7C15ull);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return (uint32_t)h;
}

/* The slot holding k among the PROBES from its hash h, or NULL. */
static Slot *find(FlowCache *c, const Key *k, uint32_t h)
{
    for (uint32_t i = 0; i < PROBES; i++) {
        Slot *s = &c->slots[(h + i) & c->mask];
        if (s->used && s->key.src == k->src && s->key.dst == k->dst &&
            s->key.sport == k->sport && s->key.dport == k->dport &&
            s->key.in_port == k->in_port)
            return s;
    }
    return NULL;
}

/* Whether a frame from in_port can be cached at all (insert and admit): the CPU port's frames
 * start with packet_out, another parser state. */
static int cacheable(const FlowCache *c, int in_port, PyObject *frame)
{
    return in_port != c->cpu_port &&
           fast_shape((const unsigned char *)PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame));
}

/* (record, packets, bytes) of a slot's counts since the last drain. */
static PyObject *pending(Slot *s)
{
    return Py_BuildValue("(OKK)", s->record, (unsigned long long)s->packets,
                         (unsigned long long)s->bytes);
}

/* Empty a slot; its counts must have been handed out. */
static void release(FlowCache *c, Slot *s)
{
    if (!s->used)
        return;
    Py_CLEAR(s->egress);
    Py_CLEAR(s->record);
    s->used = 0;
    s->packets = s->bytes = 0;
    c->entries--;
}

static int append(PyObject *out, PyObject *port, PyObject *frame)
{
    PyObject *group = PyDict_GetItemWithError(out, port);
    if (group != NULL)
        return PyList_Append(group, frame);
    if (PyErr_Occurred())
        return -1;
    group = PyList_New(1);
    if (group == NULL)
        return -1;
    Py_INCREF(frame);
    PyList_SET_ITEM(group, 0, frame);
    int rc = PyDict_SetItem(out, port, group);
    Py_DECREF(group);
    return rc;
}

/* One cached frame: verify or fill its checksums and write its MACs as the program would, and
 * append the result to out[egress]. 0: done; 1: the checksums fail, the mirror must take the
 * frame (it drops and counts it); -1: a Python error. */
static int forward(FlowCache *c, Slot *s, PyObject *frame, PyObject *out)
{
    const unsigned char *f = (const unsigned char *)PyBytes_AS_STRING(frame);
    Py_ssize_t n = PyBytes_GET_SIZE(frame);
    PyObject *result = frame;
    if (!s->fill_checksums) {
        /* NicVerifyChecksum: a frame from the network goes out unchanged if both verify. */
        if (ipv4_csum(f) != be16(f + IP_CSUM) || tcp_csum(f, n) != be16(f + TCP_CSUM))
            return 1;
        Py_INCREF(result);
    } else {
        /* NicComputeChecksum and the deparser: a frame from a core gets MACs and checksums. */
        result = PyBytes_FromStringAndSize(NULL, n);
        if (result == NULL)
            return -1;
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(result);
        memcpy(o, f, (size_t)n);
        memcpy(o, s->dst_mac, 6);
        if (s->set_src)
            memcpy(o + 6, s->src_mac, 6);
        uint16_t ip = ipv4_csum(f), tcp = tcp_csum(f, n);
        o[IP_CSUM] = (unsigned char)(ip >> 8);
        o[IP_CSUM + 1] = (unsigned char)ip;
        o[TCP_CSUM] = (unsigned char)(tcp >> 8);
        o[TCP_CSUM + 1] = (unsigned char)tcp;
    }
    int rc = append(out, s->egress, result);
    Py_DECREF(result);
    if (rc < 0)
        return -1;
    if (!s->listed) {
        s->listed = 1;
        c->dirty[c->ndirty++] = (uint32_t)(s - c->slots);
    }
    s->packets++;
    s->bytes += (uint64_t)n;
    s->used_at = c->clock;
    c->hits++;
    return 0;
}

static int port_arg(PyObject *obj, const char *what)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > 511) {
        PyErr_Format(PyExc_ValueError, "%s %ld is not a port (0..511)", what, v);
        return -1;
    }
    return (int)v;
}

/* run(in_port, frames, start, out) -> int */
static PyObject *FlowCache_run(FlowCache *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[1]) || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "run(in_port: int, frames: list, start: int, out: dict)");
        return NULL;
    }
    int in_port = port_arg(args[0], "in_port");
    if (in_port < 0)
        return NULL;
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    PyObject *frames = args[1], *out = args[3];
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (i < 0)
        i = 0;
    if (in_port == c->cpu_port)  /* a packet-out: another parser state */
        return PyLong_FromSsize_t(i < n ? i : n);
    for (; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(frames, i);
        if (!PyBytes_CheckExact(frame))
            break;
        const unsigned char *f = (const unsigned char *)PyBytes_AS_STRING(frame);
        Py_ssize_t len = PyBytes_GET_SIZE(frame);
        if (!fast_shape(f, len))
            break;
        Key k = key_of(in_port, f);
        Slot *s = find(c, &k, key_hash(&k));
        if (s == NULL)
            break;
        int rc = forward(c, s, frame, out);
        if (rc < 0)
            return NULL;
        if (rc > 0)
            break;
    }
    return PyLong_FromSsize_t(i);
}

static int mac_arg(PyObject *obj, uint8_t mac[6], const char *what)
{
    char *p;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(obj, &p, &len) < 0)
        return -1;
    if (len != 6) {
        PyErr_Format(PyExc_ValueError, "%s must be 6 bytes, got %zd", what, len);
        return -1;
    }
    memcpy(mac, p, 6);
    return 0;
}

/* insert(in_port, frame, egress, fill_checksums, dst_mac, src_mac, record) -> evicted counts
 * (record, packets, bytes) or None. False when the frame does not have the fast shape (nothing
 * is stored: such a frame always goes to the mirror). */
static PyObject *FlowCache_insert(FlowCache *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[4]) ||
        !PyBytes_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "insert(in_port: int, frame: bytes, egress: int, "
                        "fill_checksums: bool, dst_mac: bytes, src_mac: bytes, record)");
        return NULL;
    }
    int in_port = port_arg(args[0], "in_port"), egress = port_arg(args[2], "egress");
    if (in_port < 0 || egress < 0)
        return NULL;
    int fill = PyObject_IsTrue(args[3]);
    if (fill < 0)
        return NULL;
    uint8_t dst_mac[6] = {0}, src_mac[6] = {0};
    int set_src = PyBytes_GET_SIZE(args[5]) > 0;
    if (fill && (mac_arg(args[4], dst_mac, "dst_mac") < 0 ||
                 (set_src && mac_arg(args[5], src_mac, "src_mac") < 0)))
        return NULL;
    if (!cacheable(c, in_port, args[1]))
        Py_RETURN_FALSE;
    Key k = key_of(in_port, (const unsigned char *)PyBytes_AS_STRING(args[1]));
    uint32_t h = key_hash(&k);
    Slot *s = find(c, &k, h);
    for (uint32_t i = 0; i < PROBES && s == NULL; i++) {
        Slot *t = &c->slots[(h + i) & c->mask];
        if (!t->used)
            s = t;
    }
    PyObject *evicted = Py_None;
    Py_INCREF(evicted);
    if (s == NULL) {  /* every probe taken: the least recently used goes */
        s = &c->slots[h & c->mask];
        for (uint32_t i = 1; i < PROBES; i++) {
            Slot *t = &c->slots[(h + i) & c->mask];
            if (c->clock - t->used_at > c->clock - s->used_at)
                s = t;
        }
        c->evictions++;
    }
    if (s->used && s->packets) {  /* its counts go back to the caller, not lost */
        Py_DECREF(evicted);
        evicted = pending(s);
        if (evicted == NULL)
            return NULL;
        s->packets = s->bytes = 0;
    }
    release(c, s);
    s->key = k;
    s->fill_checksums = (uint8_t)fill;
    s->set_src = (uint8_t)set_src;
    memcpy(s->dst_mac, dst_mac, 6);
    memcpy(s->src_mac, src_mac, 6);
    s->egress = PyLong_FromLong(egress);
    if (s->egress == NULL) {
        Py_DECREF(evicted);
        return NULL;
    }
    Py_INCREF(args[6]);
    s->record = args[6];
    s->used_at = c->clock;
    s->used = 1;
    c->entries++;
    c->inserts++;
    return evicted;
}

/* admit(in_port, frame) -> bool: whether caching the flow of a frame the cache did not forward
 * may pay. The first FRESH_PER_BATCH new flows of a batch, yes; beyond, only a flow that missed
 * before (recently, by its hash, in a 4-way set of `seen`): a flood of one-frame flows (SYNs
 * from random ports) then costs the mirror and this probe for most frames, not an insert and an
 * eviction each, while the new connections of ordinary traffic are cached from their first
 * frame. False for a frame that cannot be cached. */
static PyObject *FlowCache_admit(FlowCache *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "admit(in_port: int, frame: bytes)");
        return NULL;
    }
    int in_port = port_arg(args[0], "in_port");
    if (in_port < 0)
        return NULL;
    if (!cacheable(c, in_port, args[1]))
        Py_RETURN_FALSE;
    Key k = key_of(in_port, (const unsigned char *)PyBytes_AS_STRING(args[1]));
    uint32_t h = key_hash(&k) | 1;  /* never 0, the empty mark */
    uint32_t *set = &c->seen[(h >> 8) & c->mask & ~3u];
    for (int i = 0; i < 4; i++)
        if (set[i] == h)
            Py_RETURN_TRUE;
    if (c->fresh > 0) {
        c->fresh--;
        Py_RETURN_TRUE;
    }
    set[c->seen_turn++ & 3] = h;  /* in turn: two flows of one set do not erase each other */
    Py_RETURN_FALSE;
}

/* drain() -> [(record, packets, bytes)]: what was counted since the last drain, summed per
 * record (the same object): flows that count into the same cells share one record, so a batch
 * of many flows costs the caller a few additions, not one per flow. */
static PyObject *FlowCache_drain(FlowCache *c, PyObject *unused)
{
    uint32_t n = c->ndirty, size = 8;
    while (size < 2 * n)
        size <<= 1;
    /* open addressing on the record's address: index + 1 into sums, 0 for empty */
    uint32_t *index = PyMem_Calloc(size, sizeof(uint32_t));
    struct { PyObject *record; uint64_t packets, bytes; } *sums =
        PyMem_Malloc((n ? n : 1) * sizeof(*sums));
    PyObject *list = NULL;
    if (index == NULL || sums == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint32_t distinct = 0;
    for (uint32_t i = 0; i < n; i++) {
        Slot *s = &c->slots[c->dirty[i]];
        s->listed = 0;
        if (!s->used || s->packets == 0)
            continue;
        uint32_t h = (uint32_t)(((uintptr_t)s->record >> 4) * 0x9E3779B1u) & (size - 1);
        while (index[h] && sums[index[h] - 1].record != s->record)
            h = (h + 1) & (size - 1);
        if (!index[h]) {
            sums[distinct].record = s->record;
            sums[distinct].packets = sums[distinct].bytes = 0;
            index[h] = ++distinct;
        }
        sums[index[h] - 1].packets += s->packets;
        sums[index[h] - 1].bytes += s->bytes;
        s->packets = s->bytes = 0;
    }
    c->ndirty = 0;
    c->clock++;
    c->fresh = FRESH_PER_BATCH;
    list = PyList_New(distinct);
    for (uint32_t i = 0; list != NULL && i < distinct; i++) {
        PyObject *item = Py_BuildValue("(OKK)", sums[i].record,
                                       (unsigned long long)sums[i].packets,
                                       (unsigned long long)sums[i].bytes);
        if (item == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, item);
    }
done:
    PyMem_Free(index);
    PyMem_Free(sums);
    return list;
}

/* clear() -> the counts drain() would return; every entry is gone. */
static PyObject *FlowCache_clear(FlowCache *c, PyObject *unused)
{
    PyObject *counts = FlowCache_drain(c, NULL);
    if (counts == NULL)
        return NULL;
    for (uint32_t i = 0; i <= c->mask && c->entries; i++)
        release(c, &c->slots[i]);
    c->clears++;
    return counts;
}

static PyObject *FlowCache_stats(FlowCache *c, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsKsI}", "hits", c->hits, "inserts", c->inserts,
                         "evictions", c->evictions, "clears", c->clears, "entries", c->entries);
}

static int FlowCache_init(FlowCache *c, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "cpu_port", NULL};
    Py_ssize_t capacity;
    int cpu_port;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ni", kwlist, &capacity, &cpu_port))
        return -1;
    if (capacity < PROBES || capacity > (1 << 24) || (capacity & (capacity - 1))) {
        PyErr_Format(PyExc_ValueError, "capacity %zd: a power of two in %d..%d", capacity,
                     PROBES, 1 << 24);
        return -1;
    }
    if (c->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FlowCache is already initialised");
        return -1;
    }
    c->slots = PyMem_Calloc((size_t)capacity, sizeof(Slot));
    c->dirty = PyMem_Calloc((size_t)capacity, sizeof(uint32_t));
    c->seen = PyMem_Calloc((size_t)capacity, sizeof(uint32_t));
    if (c->slots == NULL || c->dirty == NULL || c->seen == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->mask = (uint32_t)capacity - 1;
    c->cpu_port = cpu_port;
    c->fresh = FRESH_PER_BATCH;
    return 0;
}

static int FlowCache_traverse(FlowCache *c, visitproc visit, void *arg)
{
    for (uint32_t i = 0; c->slots != NULL && i <= c->mask; i++)
        if (c->slots[i].used)
            Py_VISIT(c->slots[i].record);
    return 0;
}

static int FlowCache_clear_refs(FlowCache *c)
{
    for (uint32_t i = 0; c->slots != NULL && i <= c->mask; i++)
        release(c, &c->slots[i]);
    return 0;
}

static void FlowCache_dealloc(FlowCache *c)
{
    PyObject_GC_UnTrack(c);
    FlowCache_clear_refs(c);
    PyMem_Free(c->slots);
    PyMem_Free(c->dirty);
    PyMem_Free(c->seen);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef FlowCache_methods[] = {
    {"run", (PyCFunction)(void (*)(void))FlowCache_run, METH_FASTCALL,
     "run(in_port, frames, start, out) -> index of the first frame from `start` on that the "
     "cache did not forward (len(frames) when it forwarded them all); the forwarded ones are "
     "appended to out[egress port]."},
    {"insert", (PyCFunction)(void (*)(void))FlowCache_insert, METH_FASTCALL,
     "insert(in_port, frame, egress, fill_checksums, dst_mac, src_mac, record): cache the "
     "program's decision for frame's flow; returns an evicted entry's pending counts "
     "(record, packets, bytes), None, or False when the frame cannot be cached."},
    {"admit", (PyCFunction)(void (*)(void))FlowCache_admit, METH_FASTCALL,
     "admit(in_port, frame) -> True when the frame's flow missed before: worth caching."},
    {"drain", (PyCFunction)FlowCache_drain, METH_NOARGS,
     "drain() -> [(record, packets, bytes)] counted since the last drain."},
    {"clear", (PyCFunction)FlowCache_clear, METH_NOARGS,
     "clear() -> what drain() would return; then forget every entry."},
    {"stats", (PyCFunction)FlowCache_stats, METH_NOARGS,
     "stats() -> {hits, inserts, evictions, clears, entries}."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FlowCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "p4mtcp._flowcache.FlowCache",
    .tp_basicsize = sizeof(FlowCache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FlowCache(capacity, cpu_port): decisions of the P4 program per TCP flow.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FlowCache_init,
    .tp_dealloc = (destructor)FlowCache_dealloc,
    .tp_traverse = (traverseproc)FlowCache_traverse,
    .tp_clear = (inquiry)FlowCache_clear_refs,
    .tp_methods = FlowCache_methods,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "p4mtcp._flowcache",
    "The NIC's flow cache in front of the P4 program's mirror (p4mtcp accel build).", -1, NULL,
};

PyMODINIT_FUNC PyInit__flowcache(void)
{
    PyObject *csum = PyImport_ImportModule("p4mtcp._csum");  /* a capsule is found by getattr */
    if (csum == NULL)
        return NULL;
    Py_DECREF(csum);
    word_sum_mod = (word_sum_mod_fn)PyCapsule_Import("p4mtcp._csum.word_sum_mod", 0);
    if (word_sum_mod == NULL) {
        PyErr_SetString(PyExc_ImportError, "p4mtcp._csum has no word_sum_mod capsule");
        return NULL;
    }
    if (PyType_Ready(&FlowCacheType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FlowCacheType);
    if (PyModule_AddObject(m, "FlowCache", (PyObject *)&FlowCacheType) < 0) {
        Py_DECREF(&FlowCacheType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
