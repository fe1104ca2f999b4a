/*
 * The FastCGI worker's fast path: reads the usual request (BEGIN_REQUEST,
 * its PARAMS, their end, often the empty STDIN of a GET) out of a
 * connection's buffer in one call. In Python the same records, pairs and
 * strings cost about 8 us of CPU per request, more than all the rest of
 * the worker's work on a small response.
 *
 * It handles only what is plain; for anything else (a record of another
 * type or request, a request not yet whole in the buffer, a malformed or
 * oversized one) it returns None and leaves the buffer as it was, and
 * worker.py's read_params, the reference, reads the request instead. So
 * it never has to judge or report a bad request, and what it returns is
 * what read_params would have.
 *
 * Built against the limited API of Python 3.9 (abi3), so one build loads
 * into any CPython 3.9 or later; worker.py serves without it when it does
 * not load.
 */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { BEGIN_REQUEST = 1, PARAMS = 4, STDIN = 5, RESPONDER = 1, KEEP_CONN = 1 };

/* A record's header at p (8 bytes are there). */
struct record {
    int kind;
    unsigned rid;
    Py_ssize_t content, size; /* size: header, content and padding */
};

static struct record
record_at(const unsigned char *p)
{
    struct record r;
    r.kind = p[1];
    r.rid = (unsigned)p[2] << 8 | p[3];
    r.content = (Py_ssize_t)p[4] << 8 | p[5];
    r.size = 8 + r.content + p[6];
    return r;
}

/* True when a whole record of version 1 starts at p + i, before end. */
static int
whole(const unsigned char *p, Py_ssize_t i, Py_ssize_t end)
{
    return end - i >= 8 && p[i] == 1 && end - i >= record_at(p + i).size;
}

/* A pair's length at p[*i], one byte or four (high bit set); -1 if it
 * runs past n. */
static Py_ssize_t
length_at(const unsigned char *p, Py_ssize_t *i, Py_ssize_t n)
{
    Py_ssize_t at = *i;
    if (at >= n)
        return -1;
    if (p[at] < 128) {
        *i = at + 1;
        return p[at];
    }
    if (n - at < 4)
        return -1;
    *i = at + 4;
    return (Py_ssize_t)(p[at] & 0x7f) << 24 | (Py_ssize_t)p[at + 1] << 16 | p[at + 2] << 8 | p[at + 3];
}

/* Adds the name-value pairs in p[0:n] to pairs as latin-1 str. Returns 0,
 * 1 when they are malformed, -1 with an exception set. *nul is set when a
 * name or value holds a NUL byte. */
static int
decode_pairs(const unsigned char *p, Py_ssize_t n, PyObject *pairs, int *nul)
{
    Py_ssize_t i = 0;
    while (i < n) {
        Py_ssize_t ln = length_at(p, &i, n);
        Py_ssize_t lv = ln < 0 ? -1 : length_at(p, &i, n);
        if (lv < 0 || ln > n - i || lv > n - i - ln)
            return 1;
        if (memchr(p + i, 0, ln + lv))
            *nul = 1;
        PyObject *name = PyUnicode_DecodeLatin1((const char *)p + i, ln, NULL);
        if (name == NULL)
            return -1;
        PyObject *value = PyUnicode_DecodeLatin1((const char *)p + i + ln, lv, NULL);
        if (value == NULL) {
            Py_DECREF(name);
            return -1;
        }
        int err = PyDict_SetItem(pairs, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (err < 0)
            return -1;
        i += ln + lv;
    }
    return 0;
}

PyDoc_STRVAR(request_doc,
"request(buf, start, end, max_bytes, max_pairs) -> None or\n"
"(next, rid, keep, pairs, stdin_ended, nul)\n\n"
"Reads a request's BEGIN_REQUEST and PARAMS records from buf[start:end]\n"
"(a bytearray), and its STDIN's end when it follows at once. next is where\n"
"the unread records begin; nul is True when a name or value holds a NUL\n"
"byte. None: the records are not all there or not plain (see the top of\n"
"fastpath.c), or the params are over max_bytes or max_pairs.");

static PyObject *
request(PyObject *self, PyObject *args)
{
    PyObject *buf;
    Py_ssize_t start, end, max_bytes, max_pairs;
    if (!PyArg_ParseTuple(args, "O!nnnn", &PyByteArray_Type, &buf, &start, &end, &max_bytes, &max_pairs))
        return NULL;
    if (start < 0 || start > end || end > PyByteArray_Size(buf))
        Py_RETURN_NONE;
    const unsigned char *p = (const unsigned char *)PyByteArray_AsString(buf);

    Py_ssize_t i = start;
    if (!whole(p, i, end))
        Py_RETURN_NONE;
    struct record r = record_at(p + i);
    const unsigned char *body = p + i + 8;
    if (r.kind != BEGIN_REQUEST || r.rid == 0 || r.content < 3 || (body[0] << 8 | body[1]) != RESPONDER)
        Py_RETURN_NONE;
    unsigned rid = r.rid;
    int keep = (body[2] & KEEP_CONN) != 0;
    i += r.size;

    /* The params records, up to the empty one that ends them. */
    Py_ssize_t first = i, total = 0, count = 0;
    for (;;) {
        if (!whole(p, i, end))
            Py_RETURN_NONE;
        r = record_at(p + i);
        if (r.kind != PARAMS || r.rid != rid)
            Py_RETURN_NONE;
        i += r.size;
        if (r.content == 0)
            break;
        total += r.content;
        count++;
        if (total > max_bytes)
            Py_RETURN_NONE;
    }
    int stdin_ended = 0;
    if (whole(p, i, end)) {
        r = record_at(p + i);
        if (r.kind == STDIN && r.rid == rid && r.content == 0) {
            stdin_ended = 1;
            i += r.size;
        }
    }

    /* Pairs may be split across records: then they are joined first. */
    const unsigned char *data = p + first + 8;
    unsigned char *joined = NULL;
    if (count > 1) {
        joined = PyMem_Malloc(total);
        if (joined == NULL)
            return PyErr_NoMemory();
        for (Py_ssize_t j = first, o = 0; o < total; j += r.size) {
            r = record_at(p + j);
            memcpy(joined + o, p + j + 8, r.content);
            o += r.content;
        }
        data = joined;
    }
    PyObject *pairs = PyDict_New();
    int nul = 0;
    int bad = pairs == NULL ? -1 : decode_pairs(data, total, pairs, &nul);
    PyMem_Free(joined);
    if (bad == 0 && PyDict_Size(pairs) > max_pairs)
        bad = 1;
    if (bad) {
        Py_XDECREF(pairs);
        if (bad < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(nINNNN)", i, rid, PyBool_FromLong(keep), pairs,
                         PyBool_FromLong(stdin_ended), PyBool_FromLong(nul));
}

static PyMethodDef methods[] = {
    {"request", request, METH_VARARGS, request_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The FastCGI worker's fast path; see fastpath.c.", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    return PyModule_Create(&module);
}
