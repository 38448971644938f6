/* The datagram checksum in C: the CRC-32 of a utcp datagram with its own CRC field left out,
 * the fixed header read and checked against it, and the sealing of a header without options
 * to its payload.
 *
 * utcp/packet.py computes the same values with zlib.crc32 when this module is not built.
 * There each datagram costs two slices and two calls into zlib, about 4,000 instructions for
 * a small datagram: a tenth of a request/response round trip.  Here one call reads the
 * buffer in place and hands the bytes to zlib's crc32 (the library Python's zlib module
 * uses), so the result is the same function of the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <zlib.h>

/* The fixed header's CRC field: bytes [CRC_OFFSET, HEADER_SIZE) (docs/PROTOCOL.md). */
#define CRC_OFFSET 20
#define HEADER_SIZE 24

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

    if (PyBytes_CheckExact(arg)) {
        data = (const unsigned char *)PyBytes_AS_STRING(arg);
        n = PyBytes_GET_SIZE(arg);
        view.obj = NULL;
    }
    else {
        if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        data = (const unsigned char *)view.buf;
        n = view.len;
    }
    if (n < HEADER_SIZE) {
        if (view.obj != NULL) {
            PyBuffer_Release(&view);
        }
        PyErr_Format(PyExc_ValueError, "a datagram of %zd bytes has no CRC field", n);
        return NULL;
    }
    crc = crc_update(0, data, CRC_OFFSET);
    crc = crc_update(crc, data + HEADER_SIZE, n - HEADER_SIZE);
    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }
    return PyLong_FromUnsignedLong(crc & 0xFFFFFFFFUL);
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

    if (PyBytes_CheckExact(arg)) {
        d = (const unsigned char *)PyBytes_AS_STRING(arg);
        n = PyBytes_GET_SIZE(arg);
        view.obj = NULL;
    }
    else {
        if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
            return NULL;
        }
        d = (const unsigned char *)view.buf;
        n = view.len;
    }
    if (n < HEADER_SIZE) {
        if (view.obj != NULL) {
            PyBuffer_Release(&view);
        }
        PyErr_Format(PyExc_ValueError, "a datagram of %zd bytes has no fixed header", n);
        return NULL;
    }
    fields[0] = d[0];
    fields[1] = d[1];
    fields[2] = ((unsigned long)d[2] << 8) | d[3];
    fields[3] = be32(d + 4);
    fields[4] = be32(d + 8);
    fields[5] = be32(d + 12);
    fields[6] = be32(d + 16);
    crc = crc_update(0, d, CRC_OFFSET);
    crc = crc_update(crc, d + HEADER_SIZE, n - HEADER_SIZE);
    crc = (crc & 0xFFFFFFFFUL) == be32(d + CRC_OFFSET);
    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }
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

PyDoc_STRVAR(seal_plain_doc,
"seal_plain(head, payload, /)\n--\n\n"
"The datagram of a 20-byte header without its CRC field and a payload: head, the CRC-32\n"
"of head and payload (big-endian), payload.");

static PyObject *
seal_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer payload;
    PyObject *head;
    PyObject *out;
    unsigned char *dst;
    uLong crc;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "seal_plain takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    head = args[0];
    if (!PyBytes_CheckExact(head) || PyBytes_GET_SIZE(head) != CRC_OFFSET) {
        PyErr_SetString(PyExc_ValueError, "head must be 20 bytes");
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &payload, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + payload.len);
    if (out == NULL) {
        PyBuffer_Release(&payload);
        return NULL;
    }
    dst = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(dst, PyBytes_AS_STRING(head), CRC_OFFSET);
    memcpy(dst + HEADER_SIZE, payload.buf, payload.len);
    PyBuffer_Release(&payload);
    crc = crc_update(0, dst, CRC_OFFSET);
    crc = crc_update(crc, dst + HEADER_SIZE, PyBytes_GET_SIZE(out) - HEADER_SIZE);
    dst[CRC_OFFSET] = (unsigned char)(crc >> 24);
    dst[CRC_OFFSET + 1] = (unsigned char)(crc >> 16);
    dst[CRC_OFFSET + 2] = (unsigned char)(crc >> 8);
    dst[CRC_OFFSET + 3] = (unsigned char)crc;
    return out;
}

static PyMethodDef crc_methods[] = {
    {"datagram_crc", (PyCFunction)datagram_crc, METH_O, datagram_crc_doc},
    {"fixed_header", (PyCFunction)fixed_header, METH_O, fixed_header_doc},
    {"seal_plain", (PyCFunction)(void (*)(void))seal_plain, METH_FASTCALL, seal_plain_doc},
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
