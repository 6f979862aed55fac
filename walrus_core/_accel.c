/* The per-entry loops of the writer and the reader, compiled.
 *
 * An optional accelerator: walrus_core works without it (pure Python, the reference), and
 * uses it when it was built (see accel.py). Both paths produce the same bytes; the tests
 * check that on every function here, and the whole behaviour suite runs against both.
 *
 * encode_run: the headers of the entries of a batch that fit in one block (format.py: a
 *     16-byte header "<IIIBBH": crc32c, length, seq, version, flags, tag).
 * decode_run: the entries lying wholly in a read buffer, each validated (header fields and
 *     the checksum bound to block, position and offset), as Entry objects.
 * crc32c: the CRC-32C of the crc32c package (same initial-value convention), used by both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 16
#define ENTRY_VERSION 2
#define FLAG_BATCH_OPEN 1
#define MIX_POS 0xC2B2AE3DULL
#define MIX_SEQ 0x85EBCA77ULL
#define MIX_LEN 0x9E3779B1ULL

/* -- CRC-32C (Castagnoli), reflected, as crc32c.crc32c(data, value) ---------------------- */

static uint32_t crc_table[8][256];
static int have_sse42 = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78U & (0U - (c & 1U)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    have_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t n) {
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= crc;
        crc = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^
              crc_table[5][(w >> 16) & 0xFF] ^ crc_table[4][(w >> 24) & 0xFF] ^
              crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
              crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                          size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static uint32_t crc32c(const unsigned char *p, size_t n, uint32_t value) {
    uint32_t crc = value ^ 0xFFFFFFFFU;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (have_sse42) return crc_hw(crc, p, n) ^ 0xFFFFFFFFU;
#endif
    return crc_soft(crc, p, n) ^ 0xFFFFFFFFU;
}

static inline uint32_t entry_seed(uint64_t salt, uint64_t pos, uint64_t offset, uint64_t length,
                                  uint64_t flags) {
    return (uint32_t)((salt ^ pos * MIX_POS ^ offset * MIX_SEQ ^ length * MIX_LEN ^
                       (flags << 8 | ENTRY_VERSION)) &
                      0xFFFFFFFFULL);
}

static inline void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* -- crc32c(data, value=0) ---------------------------------------------------------------- */

static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long value = 0;
    if (!PyArg_ParseTuple(args, "y*|k", &view, &value)) return NULL;
    uint32_t crc = crc32c((const unsigned char *)view.buf, (size_t)view.len, (uint32_t)value);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

/* crc32c_portable(data, value=0): the table-driven CRC, whatever the CPU (for the tests of
 * machines without SSE4.2). */
static PyObject *py_crc32c_portable(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long value = 0;
    if (!PyArg_ParseTuple(args, "y*|k", &view, &value)) return NULL;
    uint32_t crc = crc_soft((uint32_t)value ^ 0xFFFFFFFFU, (const unsigned char *)view.buf,
                            (size_t)view.len) ^
                   0xFFFFFFFFU;
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

/* -- encode_run --------------------------------------------------------------------------- */

/* encode_run(payloads, index, salt, tag, pos, offset, limit, open_before, due_pos, due_offset,
 *            every_bytes, every_entries, bufs, mark_offsets, mark_positions)
 *   -> (index, pos, offset, last_pos, due_pos, due_offset)
 *
 * payloads: a list of (buffer, length) tuples. From payloads[index] on, while the entry fits
 * (pos + 16 + length <= limit), append its header and its buffer to ``bufs``, and an offset
 * index pair to the mark lists when one is due. Entries with an index below ``open_before``
 * carry BATCH_OPEN. Returns where it stopped; last_pos is the position of the last entry
 * written (-1 if none).
 */
static PyObject *py_encode_run(PyObject *self, PyObject *args) {
    PyObject *payloads, *bufs, *mark_offsets, *mark_positions;
    Py_ssize_t index, open_before;
    unsigned long long salt, tag, pos, offset, limit, due_pos, due_offset, every_bytes,
        every_entries;
    if (!PyArg_ParseTuple(args, "O!nKKKKKnKKKKO!O!O!", &PyList_Type, &payloads, &index, &salt,
                          &tag, &pos, &offset, &limit, &open_before, &due_pos, &due_offset,
                          &every_bytes, &every_entries, &PyList_Type, &bufs, &PyList_Type,
                          &mark_offsets, &PyList_Type, &mark_positions))
        return NULL;
    if (index < 0 || open_before < 0) {
        PyErr_SetString(PyExc_ValueError, "index and open_before must be >= 0");
        return NULL;
    }
    long long last_pos = -1;
    for (; index < PyList_GET_SIZE(payloads); index++) {
        PyObject *item = PyList_GET_ITEM(payloads, index);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "payloads must be (buffer, length) tuples");
            return NULL;
        }
        /* The tuple holds its two items, and is held here while they are used. */
        Py_INCREF(item);
        PyObject *payload = PyTuple_GET_ITEM(item, 0);
        unsigned long long length = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 1));
        if (length == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_DECREF(item);
            return NULL;
        }
        if (length > (1ULL << 40) || pos + HEADER_SIZE + length > limit) {
            Py_DECREF(item);
            break;
        }
        Py_buffer view;
        if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(item);
            return NULL;
        }
        if ((unsigned long long)view.len != length) {
            PyBuffer_Release(&view);
            Py_DECREF(item);
            PyErr_SetString(PyExc_ValueError, "a payload's length does not match its buffer");
            return NULL;
        }
        unsigned long long flags = index < open_before ? FLAG_BATCH_OPEN : 0;
        uint32_t crc = crc32c((const unsigned char *)view.buf, (size_t)view.len,
                              entry_seed(salt, pos, offset, length, flags));
        PyBuffer_Release(&view);
        PyObject *header = PyBytes_FromStringAndSize(NULL, HEADER_SIZE);
        if (header == NULL) {
            Py_DECREF(item);
            return NULL;
        }
        unsigned char *h = (unsigned char *)PyBytes_AS_STRING(header);
        put32(h, crc);
        put32(h + 4, (uint32_t)length);
        put32(h + 8, (uint32_t)(offset & 0xFFFFFFFFULL));
        h[12] = ENTRY_VERSION;
        h[13] = (unsigned char)flags;
        h[14] = (unsigned char)tag;
        h[15] = (unsigned char)(tag >> 8);
        int failed = PyList_Append(bufs, header) < 0 || PyList_Append(bufs, payload) < 0;
        Py_DECREF(header);
        Py_DECREF(item);
        if (failed) return NULL;
        if (pos >= due_pos || offset >= due_offset) {
            PyObject *o = PyLong_FromUnsignedLongLong(offset);
            PyObject *p = PyLong_FromUnsignedLongLong(pos);
            failed = o == NULL || p == NULL || PyList_Append(mark_offsets, o) < 0 ||
                     PyList_Append(mark_positions, p) < 0;
            Py_XDECREF(o);
            Py_XDECREF(p);
            if (failed) return NULL;
            due_pos = pos + every_bytes;
            due_offset = offset + every_entries;
        }
        last_pos = (long long)pos;
        pos += HEADER_SIZE + length;
        offset += 1;
    }
    return Py_BuildValue("nKKLKK", index, pos, offset, last_pos, due_pos, due_offset);
}

/* -- decode_run --------------------------------------------------------------------------- */

static PyTypeObject *entry_type = NULL;
static PyObject *entry_data = NULL;   /* the member descriptors of Entry's two slots */
static PyObject *entry_offset = NULL;

/* set_entry_type(Entry): the class decode_run builds (a slotted class with data, offset). */
static PyObject *py_set_entry_type(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "expected a class");
        return NULL;
    }
    PyObject *data = PyObject_GetAttrString(cls, "data");
    PyObject *off = data ? PyObject_GetAttrString(cls, "offset") : NULL;
    if (off == NULL || Py_TYPE(data)->tp_descr_set == NULL ||
        Py_TYPE(off)->tp_descr_set == NULL) {
        Py_XDECREF(data);
        Py_XDECREF(off);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "the class needs slots 'data' and 'offset'");
        return NULL;
    }
    Py_XSETREF(entry_data, data);
    Py_XSETREF(entry_offset, off);
    Py_INCREF(cls);
    Py_XSETREF(entry_type, (PyTypeObject *)cls);
    Py_RETURN_NONE;
}

/* decode_run(buf, rel, buf_start, offset, lim, salt, tag, max_bytes, total, out)
 *   -> (rel, offset, total, full)
 *
 * Appends to ``out`` an Entry for every entry from buf[rel] on that lies wholly in ``buf``
 * and validates, while offset < lim. Stops (full=True) before an entry whose payload would
 * take ``total`` past ``max_bytes`` when ``out`` is not empty. Anything unusual (an entry
 * crossing the buffer's end, a bad header or checksum) just stops the run: the caller's
 * careful code looks at it.
 */
static PyObject *py_decode_run(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t rel;
    unsigned long long buf_start, offset, lim, salt, tag, max_bytes, total;
    PyObject *out;
    if (entry_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_entry_type() was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*nKKKKKKKO!", &view, &rel, &buf_start, &offset, &lim, &salt,
                          &tag, &max_bytes, &total, &PyList_Type, &out))
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t blen = view.len;
    int full = 0;
    int error = 0;
    while (offset < lim && rel >= 0 && rel + HEADER_SIZE <= blen) {
        const unsigned char *h = buf + rel;
        uint32_t crc = get32(h);
        unsigned long long length = get32(h + 4);
        uint32_t seq = get32(h + 8);
        unsigned int version = h[12];
        unsigned int flags = h[13];
        unsigned int got_tag = (unsigned int)h[14] | (unsigned int)h[15] << 8;
        Py_ssize_t hi = rel + HEADER_SIZE + (Py_ssize_t)length;
        if (hi > blen || seq != (uint32_t)(offset & 0xFFFFFFFFULL) || version != ENTRY_VERSION ||
            got_tag != tag)
            break;
        /* total + length > max_bytes, without overflow */
        if ((total > max_bytes || length > max_bytes - total) && PyList_GET_SIZE(out) > 0) {
            full = 1;
            break;
        }
        uint32_t seed = (uint32_t)((salt ^ (buf_start + (unsigned long long)rel) * MIX_POS ^
                                    offset * MIX_SEQ ^ length * MIX_LEN ^
                                    ((unsigned long long)flags << 8 | version)) &
                                   0xFFFFFFFFULL);
        /* Copy first, then check the copy: what is handed out is what was checked, even if
         * the buffer could change under us. */
        PyObject *data = PyBytes_FromStringAndSize((const char *)h + HEADER_SIZE,
                                                   (Py_ssize_t)length);
        if (data == NULL) {
            error = 1;
            break;
        }
        if (crc32c((const unsigned char *)PyBytes_AS_STRING(data), (size_t)length, seed) != crc) {
            Py_DECREF(data);
            break;
        }
        PyObject *off = PyLong_FromUnsignedLongLong(offset);
        PyObject *entry = off ? entry_type->tp_alloc(entry_type, 0) : NULL;
        if (entry == NULL ||
            Py_TYPE(entry_data)->tp_descr_set(entry_data, entry, data) < 0 ||
            Py_TYPE(entry_offset)->tp_descr_set(entry_offset, entry, off) < 0 ||
            PyList_Append(out, entry) < 0)
            error = 1;
        Py_XDECREF(data);
        Py_XDECREF(off);
        Py_XDECREF(entry);
        if (error) break;
        total += length;
        offset += 1;
        rel = hi;
    }
    PyBuffer_Release(&view);
    if (error) return NULL;
    return Py_BuildValue("nKKO", rel, offset, total, full ? Py_True : Py_False);
}

/* -- measure ------------------------------------------------------------------------------ */

/* measure(items, as_payload) -> (payloads, total, longest)
 *
 * The (buffer, length) tuples of a batch's items: a bytes item as it is, anything else as
 * as_payload(item) returns it (which raises for what is not a payload). Also the total and
 * the longest length, for the batch limits.
 */
static PyObject *py_measure(PyObject *self, PyObject *args) {
    PyObject *items, *as_payload;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &items, &as_payload)) return NULL;
    /* A snapshot holding every item: as_payload runs Python code, which may change the list. */
    PyObject *snapshot = PySequence_Tuple(items);
    if (snapshot == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(snapshot);
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        Py_DECREF(snapshot);
        return NULL;
    }
    unsigned long long total = 0, longest = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(snapshot, i);
        PyObject *pair;
        unsigned long long length;
        if (PyBytes_CheckExact(item)) {
            length = (unsigned long long)PyBytes_GET_SIZE(item);
            pair = Py_BuildValue("(OK)", item, length);
        } else {
            pair = PyObject_CallOneArg(as_payload, item);
            if (pair != NULL && (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2)) {
                Py_DECREF(pair);
                PyErr_SetString(PyExc_TypeError, "as_payload must return (buffer, length)");
                pair = NULL;
            }
            length = pair ? PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(pair, 1)) : 0;
            if (pair != NULL && PyErr_Occurred()) Py_CLEAR(pair);
        }
        if (pair == NULL || PyList_Append(out, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(out);
            Py_DECREF(snapshot);
            return NULL;
        }
        Py_DECREF(pair);
        total += length;
        if (length > longest) longest = length;
    }
    PyObject *result = Py_BuildValue("OKK", out, total, longest);
    Py_DECREF(out);
    Py_DECREF(snapshot);
    return result;
}

static PyMethodDef methods[] = {
    {"measure", py_measure, METH_VARARGS, "A batch's (buffer, length) tuples, total, longest."},
    {"crc32c", py_crc32c, METH_VARARGS, "crc32c(data, value=0): as crc32c.crc32c."},
    {"crc32c_portable", py_crc32c_portable, METH_VARARGS, "crc32c without SSE4.2."},
    {"encode_run", py_encode_run, METH_VARARGS, "Headers of the batch entries that fit."},
    {"decode_run", py_decode_run, METH_VARARGS, "Validated entries lying in a buffer."},
    {"set_entry_type", py_set_entry_type, METH_O, "The class decode_run builds."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "walrus_core._accel",
    "Compiled per-entry loops of the writer and the reader (optional; see accel.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__accel(void) {
    crc_init();
    return PyModule_Create(&module);
}
