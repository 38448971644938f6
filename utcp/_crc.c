/* The datagram checksum in C: the CRC-32 of a utcp datagram with its own CRC field left out,
 * the fixed header read and checked against it, and a whole datagram without options built.
 *
 * utcp/packet.py computes the same values with zlib.crc32 when this module is not built.
 * There each datagram costs two slices and two calls into zlib, and struct's packing or
 * unpacking besides: about a ninth of a request/response round trip's instructions (16,000
 * of 146,700 over its four datagram ends, benchmarks/HISTORY.md).  Here one call reads or
 * writes the buffer in place and hands the bytes to zlib's crc32 (the library Python's zlib
 * module uses), so the result is the same function of the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <zlib.h>

/* The fixed header's CRC field: bytes [CRC_OFFSET, HEADER_SIZE) (docs/PROTOCOL.md). */
#define CRC_OFFSET 20
#define HEADER_SIZE 24
#define PLAIN_VERSION 1 /* packet.VERSION */

static uLong
crc_update(uLong crc, const unsigned char *data, Py_ssize_t n)
{
    /* zlib's crc32 takes an unsigned int length: feed larger buffers in parts. */
    while (n > 0) {
        uInt part = n > 0x40000000 ? 0x40000000 : (uInt)n;
        crc = crc32(crc, data, part);
        data += part;
        n -= part;
    }
    return crc;
}

/* CRC-32 of the n >= HEADER_SIZE bytes of a datagram, its CRC field left out. */
static uLong
datagram_crc_of(const unsigned char *data, Py_ssize_t n)
{
    uLong crc = crc_update(0, data, CRC_OFFSET);
    return crc_update(crc, data + HEADER_SIZE, n - HEADER_SIZE) & 0xFFFFFFFFUL;
}

static void
release_datagram(Py_buffer *view)
{
    if (view->obj != NULL) {
        PyBuffer_Release(view);
    }
}

/* The bytes of a datagram and their count: a bytes object's own, anything else's buffer (to
 * be given back with release_datagram).  NULL, with an exception set, when it has no buffer
 * or is shorter than the fixed header. */
static const unsigned char *
acquire_datagram(PyObject *arg, Py_buffer *view, Py_ssize_t *n)
{
    if (PyBytes_CheckExact(arg)) {
        view->obj = NULL;  /* nothing to give back */
        view->buf = PyBytes_AS_STRING(arg);
        *n = PyBytes_GET_SIZE(arg);
    }
    else if (PyObject_GetBuffer(arg, view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    else {
        *n = view->len;
    }
    if (*n < HEADER_SIZE) {
        release_datagram(view);
        PyErr_Format(PyExc_ValueError, "a datagram of %zd bytes has no fixed header", *n);
        return NULL;
    }
    return (const unsigned char *)view->buf;
}

PyDoc_STRVAR(datagram_crc_doc,
"datagram_crc(data, /)\n--\n\n"
"CRC-32 of a datagram with its own CRC field (bytes 20 to 24) left out.");

static PyObject *
datagram_crc(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    const unsigned char *data;
    Py_ssize_t n;
    uLong crc;

    data = acquire_datagram(arg, &view, &n);
    if (data == NULL) {
        return NULL;
    }
    crc = datagram_crc_of(data, n);
    release_datagram(&view);
    return PyLong_FromUnsignedLong(crc);
}

static unsigned long
be32(const unsigned char *p)
{
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) |
           ((unsigned long)p[2] << 8) | (unsigned long)p[3];
}

PyDoc_STRVAR(fixed_header_doc,
"fixed_header(data, /)\n--\n\n"
"The fixed header's fields (version and header length, flags, window, source and destination\n"
"connection ids, sequence and acknowledgement numbers) and whether the CRC field holds the\n"
"datagram's CRC-32.");

static PyObject *
fixed_header(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    const unsigned char *d;
    Py_ssize_t n;
    uLong crc;
    PyObject *out;
    PyObject *item;
    unsigned long fields[7];
    int i;

    d = acquire_datagram(arg, &view, &n);
    if (d == NULL) {
        return NULL;
    }
    fields[0] = d[0];
    fields[1] = d[1];
    fields[2] = ((unsigned long)d[2] << 8) | d[3];
    fields[3] = be32(d + 4);
    fields[4] = be32(d + 8);
    fields[5] = be32(d + 12);
    fields[6] = be32(d + 16);
    crc = datagram_crc_of(d, n) == be32(d + CRC_OFFSET);
    release_datagram(&view);
    out = PyTuple_New(8);
    if (out == NULL) {
        return NULL;
    }
    for (i = 0; i < 7; i++) {
        item = PyLong_FromUnsignedLong(fields[i]);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, item);
    }
    item = crc ? Py_True : Py_False;
    Py_INCREF(item);
    PyTuple_SET_ITEM(out, 7, item);
    return out;
}

/* The field widths of a header without options, after its first byte (the version and a
 * header length of six words): flags, window, source and destination ids, seq, ack. */
static const unsigned long plain_limits[6] = {
    0xFFUL, 0xFFFFFFFFUL, 0xFFFFFFFFUL, 0xFFFFFFFFUL, 0xFFFFFFFFUL, 0xFFFFUL,
};

static void
put_be32(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

PyDoc_STRVAR(encode_plain_doc,
"encode_plain(flags, src_cid, dst_cid, seq, ack, window, payload, /)\n--\n\n"
"The datagram of a packet without options: the fixed header, its CRC-32 and the payload.");

static PyObject *
encode_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer payload;
    unsigned long v[6];
    PyObject *out;
    unsigned char *dst;
    uLong crc;
    int i;

    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "encode_plain takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    for (i = 0; i < 6; i++) {
        v[i] = PyLong_AsUnsignedLong(args[i]);
        if (v[i] == (unsigned long)-1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, "packet field out of range");
            }
            return NULL;
        }
        if (v[i] > plain_limits[i]) {
            PyErr_SetString(PyExc_ValueError, "packet field out of range");
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[6], &payload, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + payload.len);
    if (out == NULL) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    dst = (unsigned char *)PyBytes_AS_STRING(out);
    dst[0] = (unsigned char)((PLAIN_VERSION << 4) | (HEADER_SIZE >> 2));
    dst[1] = (unsigned char)v[0];
    dst[2] = (unsigned char)(v[5] >> 8);
    dst[3] = (unsigned char)v[5];
    put_be32(dst + 4, v[1]);
    put_be32(dst + 8, v[2]);
    put_be32(dst + 12, v[3]);
    put_be32(dst + 16, v[4]);
    memcpy(dst + HEADER_SIZE, payload.buf, payload.len);
    PyBuffer_Release(&payload);
    crc = datagram_crc_of(dst, PyBytes_GET_SIZE(out));
    put_be32(dst + CRC_OFFSET, crc);
    return out;
}

static PyMethodDef crc_methods[] = {
    {"datagram_crc", (PyCFunction)datagram_crc, METH_O, datagram_crc_doc},
    {"fixed_header", (PyCFunction)fixed_header, METH_O, fixed_header_doc},
    {"encode_plain", (PyCFunction)(void (*)(void))encode_plain, METH_FASTCALL, encode_plain_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef crc_module = {
    PyModuleDef_HEAD_INIT,
    "utcp._crc",
    "The datagram checksum in C (utcp/packet.py has the same in Python).",
    0,
    crc_methods,
};

PyMODINIT_FUNC
PyInit__crc(void)
{
    return PyModuleDef_Init(&crc_module);
}
