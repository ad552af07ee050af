/* p4mtcp._csum: the RFC 1071 one's-complement sum as a C loop, for the optional compiled build.
 *
 * p4mtcp.hashing.ones_sum_py is the reference and defines the result: the big-endian 16-bit
 * words of the buffer (an odd last byte padded with a zero byte) plus `start`, folded to 16 bits
 * by end-around carry, a non-zero multiple of 0xFFFF written 0xFFFF and zero only when every
 * word and `start` are zero. In Python that is one int.from_bytes and one modulo, a division per
 * 30-bit digit of a 12 000-bit number for a 1500-byte frame: about 4 us. This loop is the same
 * sum at memory speed (about 0.1 us). `p4mtcp accel build` compiles it (p4mtcp.accel.NATIVE), the manifest
 * records this file's hash, and hashing uses it only when that build is current.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The residue mod 0xFFFF of the sum of the buffer's big-endian 16-bit words, and whether any
 * word is non-zero. The loop reads 8 bytes at a time in the machine's byte order and adds their
 * two 32-bit halves: each half is congruent to the sum of its two 16-bit words (2^16 = 1 mod
 * 0xFFFF), and on a little-endian machine those words are byte-swapped, which multiplies the
 * residue by 2^8 (RFC 1071 2(B)); multiplying by 2^8 once more (2^16 = 1) undoes it. 2^32
 * additions of 33-bit values fit the 64-bit accumulator: buffers below 32 GiB. */
static uint64_t word_sum_mod(const unsigned char *p, Py_ssize_t n, int *nonzero)
{
    uint64_t acc = 0, tail = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, p + i, 8);
        acc += (x & 0xFFFFFFFFu) + (x >> 32);
    }
    for (; i + 2 <= n; i += 2)
        tail += ((uint64_t)p[i] << 8) | p[i + 1];
    if (i < n)
        tail += (uint64_t)p[i] << 8;  /* the odd last byte, padded with zero */
    *nonzero = acc != 0 || tail != 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (acc % 0xFFFF + tail % 0xFFFF) % 0xFFFF;
#else
    return ((acc % 0xFFFF) * 256 % 0xFFFF + tail % 0xFFFF) % 0xFFFF;
#endif
}

/* ones_sum(data, start=0, /) -> int: data is any contiguous buffer, start a non-negative int. */
static PyObject *ones_sum(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "ones_sum() takes 1 or 2 arguments (%zd given)", nargs);
        return NULL;
    }
    uint64_t start_mod = 0;
    int start_nonzero = 0;
    if (nargs == 2) {
        PyObject *start = args[1];
        if (!PyLong_Check(start)) {
            PyErr_Format(PyExc_TypeError, "ones_sum() start must be an int, not %.100s",
                         Py_TYPE(start)->tp_name);
            return NULL;
        }
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(start, &overflow);
        if (value == -1 && PyErr_Occurred())
            return NULL;
        if (overflow < 0 || (overflow == 0 && value < 0)) {
            PyErr_SetString(PyExc_ValueError, "ones_sum() start must not be negative");
            return NULL;
        }
        start_nonzero = value > 0 || overflow > 0;
        unsigned long long small = overflow ? 0 : (unsigned long long)value;
        if (overflow > 0) {  /* more than 63 bits: let Python reduce it */
            PyObject *modulus = PyLong_FromLong(0xFFFF);
            if (modulus == NULL)
                return NULL;
            PyObject *rest = PyNumber_Remainder(start, modulus);
            Py_DECREF(modulus);
            if (rest == NULL)
                return NULL;
            small = PyLong_AsUnsignedLongLong(rest);
            Py_DECREF(rest);
            if (small == (unsigned long long)-1 && PyErr_Occurred())
                return NULL;
        }
        start_mod = small % 0xFFFF;
    }
    /* A contiguous buffer is read in place; any other bytes-like object (a strided
     * memoryview) is read as bytes(data), as int.from_bytes in the reference does. */
    PyObject *data = args[0], *copy = NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError) || !PyMemoryView_Check(data))
            return NULL;
        PyErr_Clear();
        copy = PyObject_Bytes(data);
        if (copy == NULL)
            return NULL;
        if (PyObject_GetBuffer(copy, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(copy);
            return NULL;
        }
    }
    int words_nonzero;
    uint64_t words = word_sum_mod((const unsigned char *)view.buf, view.len, &words_nonzero);
    PyBuffer_Release(&view);
    Py_XDECREF(copy);
    uint64_t folded = (words + start_mod) % 0xFFFF;
    if (folded == 0 && (words_nonzero || start_nonzero))
        folded = 0xFFFF;
    return PyLong_FromUnsignedLongLong(folded);
}

static PyMethodDef methods[] = {
    {"ones_sum", (PyCFunction)(void (*)(void))ones_sum, METH_FASTCALL,
     "ones_sum(data, start=0, /): RFC 1071 one's-complement sum of data's big-endian 16-bit "
     "words plus start, folded to 16 bits (p4mtcp.hashing.ones_sum_py is the reference)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "p4mtcp._csum",
    "The RFC 1071 one's-complement sum as a C loop (p4mtcp accel build).", -1, methods,
};

/* word_sum_mod for other C modules (p4mtcp._flowcache), as PyCapsule_Import names it. */
#define CAPSULE "p4mtcp._csum.word_sum_mod"

PyMODINIT_FUNC PyInit__csum(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    PyObject *capsule = PyCapsule_New((void *)word_sum_mod, CAPSULE, NULL);
    if (capsule == NULL || PyModule_AddObject(m, "word_sum_mod", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
