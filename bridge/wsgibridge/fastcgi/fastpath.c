/*
 * The FastCGI worker's fast path, for the two ends of the usual request.
 * request() reads it (BEGIN_REQUEST, its PARAMS, their end, often the
 * empty STDIN of a GET) out of a connection's buffer and makes its
 * environ, in one call; head() checks the status and headers the app
 * gives start_response and makes the CGI header block. In Python the same
 * records, pairs, strings and checks cost 7.3 us of CPU per request on
 * the bench machine, most of the worker's own work on a small response.
 * accept() takes the next connection more cheaply than the socket module.
 *
 * request() and head() handle only what is plain; for anything else (a
 * record of another type or request, a request not yet whole in the
 * buffer, a malformed, oversized or refused one; headers that break a
 * rule) they return None, leaving the buffer as it was, and the reference
 * in Python does the work instead (request.py's read_params, environ.py's
 * make_environ, wsgi.py's header_block). So the C never has to judge or report a
 * bad request or a broken app, and what it returns is what the Python
 * would have.
 *
 * Built against the limited API of Python 3.9 (abi3), so one build loads
 * into any CPython 3.9 or later (fastpath.py loads it); the worker serves
 * without it when it does not load.
 */
#define _GNU_SOURCE /* accept4 */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

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

/* A param's value in the buffer; p is NULL when the param is absent. */
struct span {
    const unsigned char *p;
    Py_ssize_t n;
};

/* The params make_environ reads or sets, and the key it adds. */
enum {
    CONTENT_LENGTH, REQUEST_METHOD, SERVER_PROTOCOL, SCRIPT_NAME, PATH_INFO, DOCUMENT_URI, QUERY_STRING,
    HTTPS, REQUEST_SCHEME, SERVER_NAME, SERVER_PORT, HTTP_HOST, HTTP_TRANSFER_ENCODING, REQUEST_URI, URL_SCHEME,
    KNOWN
};
static const char *const known_names[KNOWN] = {
    "CONTENT_LENGTH", "REQUEST_METHOD", "SERVER_PROTOCOL", "SCRIPT_NAME", "PATH_INFO", "DOCUMENT_URI",
    "QUERY_STRING", "HTTPS", "REQUEST_SCHEME", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST",
    "HTTP_TRANSFER_ENCODING", "REQUEST_URI", "wsgi.url_scheme",
};

/* How SCRIPT_NAME and PATH_INFO are made (environ.py's split_path). */
enum mount_mode { MOUNT_AUTO, MOUNT_KEEP, MOUNT_AT };
/* Their str, interned once: a known name costs no new string, and its
 * hash is already there. Then the values the environ shares. */
static PyObject *keys[KNOWN], *empty, *http, *https, *localhost, *port80, *port443;

enum { PLAIN = 0, DECLINED = 1 }; /* and -1: an exception is set */

/* RFC 9110 token characters: a method, or a header name. */
static int
tchar(unsigned c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", (int)c) != NULL);
}

/* Control characters other than HTAB, which no header value or reason
 * phrase may hold. */
static int
control(unsigned c)
{
    return (c < 32 && c != '\t') || c == 127;
}

static int
digits(const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

static int
lower(unsigned c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Whether s, in ASCII lower case, is word (lower case). */
static int
is(struct span s, const char *word)
{
    Py_ssize_t n = (Py_ssize_t)strlen(word);
    if (s.p == NULL || s.n != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (lower(s.p[i]) != word[i])
            return 0;
    return 1;
}

/* Whether s, in ASCII lower case, holds word (lower case). */
static int
holds(struct span s, const char *word)
{
    Py_ssize_t n = (Py_ssize_t)strlen(word);
    for (Py_ssize_t i = 0; i + n <= s.n; i++)
        if (is((struct span){s.p + i, n}, word))
            return 1;
    return 0;
}

static int
same(const unsigned char *p, Py_ssize_t n, const char *word)
{
    return n == (Py_ssize_t)strlen(word) && memcmp(p, word, n) == 0;
}

/* make_environ's valid_name, inverted: the names an environ never holds. */
static int
dropped(const unsigned char *name, Py_ssize_t n)
{
    if (n == 0 || memchr(name, '=', n) || (n >= 5 && memcmp(name, "wsgi.", 5) == 0))
        return 1;
    if (n < 5 || memcmp(name, "HTTP_", 5) != 0)
        return 0;
    if (n == 5 || same(name, n, "HTTP_PROXY") || same(name, n, "HTTP_CONTENT_LENGTH") ||
        same(name, n, "HTTP_CONTENT_TYPE"))
        return 1;
    for (Py_ssize_t i = 5; i < n; i++)
        if (!((name[i] >= 'A' && name[i] <= 'Z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_'))
            return 1;
    return 0;
}

/* The index of a known name, or -1. */
static int
known(const unsigned char *name, Py_ssize_t n)
{
    for (int k = 0; k < URL_SCHEME; k++)
        if (same(name, n, known_names[k]))
            return k;
    return -1;
}

static PyObject *
latin1(const unsigned char *p, Py_ssize_t n)
{
    if (n == 0) {
        Py_INCREF(empty);
        return empty;
    }
    return PyUnicode_DecodeLatin1((const char *)p, n, NULL);
}

/* env[keys[k]] = value, and drops the reference to value. */
static int
put(PyObject *env, int k, PyObject *value)
{
    if (value == NULL)
        return -1;
    int err = PyDict_SetItem(env, keys[k], value);
    Py_DECREF(value);
    return err;
}

/* env[keys[k]] = one of the values the environs share. */
static int
put_shared(PyObject *env, int k, PyObject *value)
{
    Py_INCREF(value);
    return put(env, k, value);
}

/* env[keys[k]] = the bytes p[0:n], after a slash when slash is set. */
static int
put_bytes(PyObject *env, int k, int slash, const unsigned char *p, Py_ssize_t n)
{
    if (!slash)
        return put(env, k, latin1(p, n));
    unsigned char *joined = PyMem_Malloc(n + 1);
    if (joined == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    joined[0] = '/';
    if (n > 0)
        memcpy(joined + 1, p, n);
    PyObject *value = latin1(joined, n + 1);
    PyMem_Free(joined);
    return put(env, k, value);
}

/* Adds the name-value pairs in p[0:n] to env as latin-1 str, but for the
 * names the environ drops, and notes the known ones' values in seen.
 * Declines malformed pairs, a NUL byte, more than max_pairs pairs
 * (counted with repeats, where the Python counts names: near the limit,
 * the Python decides), and a name sent twice (the Python joins a
 * repeated header's values). */
static int
decode_pairs(const unsigned char *p, Py_ssize_t n, Py_ssize_t max_pairs, PyObject *env, struct span *seen)
{
    Py_ssize_t i = 0, count = 0, kept = 0;
    while (i < n) {
        Py_ssize_t ln = length_at(p, &i, n);
        Py_ssize_t lv = ln < 0 ? -1 : length_at(p, &i, n);
        if (lv < 0 || ln > n - i || lv > n - i - ln)
            return DECLINED;
        const unsigned char *name = p + i, *value = p + i + ln;
        i += ln + lv;
        if (++count > max_pairs || memchr(name, 0, ln + lv))
            return DECLINED;
        if (dropped(name, ln))
            continue;
        int k = known(name, ln);
        PyObject *key;
        if (k >= 0) {
            seen[k] = (struct span){value, lv};
            key = keys[k];
            Py_INCREF(key);
        } else if ((key = latin1(name, ln)) == NULL) {
            return -1;
        }
        PyObject *v = latin1(value, lv);
        int err = v == NULL ? -1 : PyDict_SetItem(env, key, v);
        Py_DECREF(key);
        Py_XDECREF(v);
        if (err < 0)
            return -1;
        kept++;
    }
    return PyDict_Size(env) == kept ? PLAIN : DECLINED;
}

/* True when the path of the request URI uri (up to its query) is a
 * followed by b: then no prefix was stripped from the path given. */
static int
same_path(struct span uri, struct span a, struct span b)
{
    const unsigned char *q = uri.p == NULL ? NULL : memchr(uri.p, '?', uri.n);
    Py_ssize_t n = q == NULL ? uri.n : q - uri.p;
    return n == a.n + b.n && (a.n == 0 || memcmp(uri.p, a.p, a.n) == 0) &&
           (b.n == 0 || memcmp(uri.p + a.n, b.p, b.n) == 0);
}

/* The rest of make_environ, on the env decode_pairs made: CONTENT_LENGTH,
 * the method and protocol (declined when the Python would refuse them),
 * SCRIPT_NAME and PATH_INFO (by mode; MOUNT_AT: at mount, its latin-1
 * bytes), the defaults, the URL scheme, and whether a body runs to its
 * end. What split_path does in the rare cases it declines: a prefix the
 * web server stripped, a split with SCRIPT_NAME ending in a slash (but
 * under MOUNT_KEEP), a split under a mount point. */
static int
make_environ(PyObject *env, struct span *seen, enum mount_mode mode, const unsigned char *mount,
             Py_ssize_t mount_n, long long *length, int *to_eof)
{
    struct span cl = seen[CONTENT_LENGTH];
    *length = -1;
    if (cl.n > 0) {
        if (cl.n > 18 || !digits(cl.p, cl.n))
            return DECLINED;
        *length = 0;
        for (Py_ssize_t i = 0; i < cl.n; i++)
            *length = *length * 10 + (cl.p[i] - '0');
    }
    struct span method = seen[REQUEST_METHOD], proto = seen[SERVER_PROTOCOL];
    if (method.n == 0)
        return DECLINED;
    for (Py_ssize_t i = 0; i < method.n; i++)
        if (!tchar(method.p[i]))
            return DECLINED;
    if (proto.n <= 5 || memcmp(proto.p, "HTTP/", 5) != 0)
        return DECLINED;
    for (Py_ssize_t i = 5; i < proto.n; i++)
        if (proto.p[i] != '.' && (proto.p[i] < '0' || proto.p[i] > '9'))
            return DECLINED;

    /* Moved to the end, as the Python's pop and set do; an empty one goes. */
    if (cl.p != NULL) {
        if (PyDict_DelItem(env, keys[CONTENT_LENGTH]) < 0)
            return -1;
        if (cl.n > 0 && put_bytes(env, CONTENT_LENGTH, 0, cl.p, cl.n) < 0)
            return -1;
    }

    struct span script = seen[SCRIPT_NAME], path = seen[PATH_INFO];
    if (mode == MOUNT_AT) {
        if (path.n > 0) {
            while (script.n > 0 && script.p[script.n - 1] == '/')
                script.n--;
            if (script.n > 0)
                return DECLINED; /* a split under a mount point: joined in Python */
        }
        if (path.n == 0)
            path = seen[DOCUMENT_URI];
        if (path.n == 0)
            path = script;
        if (mount_n > 0 && path.n >= mount_n && memcmp(path.p, mount, mount_n) == 0 &&
            (path.n == mount_n || path.p[mount_n] == '/')) {
            path.p += mount_n;
            path.n -= mount_n;
        }
        if (put_bytes(env, SCRIPT_NAME, 0, mount, mount_n) < 0 || put_bytes(env, PATH_INFO, 0, path.p, path.n) < 0)
            return -1;
    } else if (mode == MOUNT_AUTO) {
        if (path.n == 0) {
            path = seen[DOCUMENT_URI].n > 0 ? seen[DOCUMENT_URI] : script;
            script = (struct span){NULL, 0};
        } else if (script.n > 0 && script.p[script.n - 1] == '/') {
            return DECLINED;
        }
        if (seen[REQUEST_URI].p != NULL && !same_path(seen[REQUEST_URI], script, path))
            return DECLINED;
        if (put_bytes(env, SCRIPT_NAME, 0, script.p, script.n) < 0 || put_bytes(env, PATH_INFO, 0, path.p, path.n) < 0)
            return -1;
    } else if (script.n > 0 && script.p[script.n - 1] == '/') {
        while (script.n > 0 && script.p[script.n - 1] == '/')
            script.n--;
        while (path.n > 0 && path.p[0] == '/') {
            path.p++;
            path.n--;
        }
        if (put_bytes(env, SCRIPT_NAME, 0, script.p, script.n) < 0 || put_bytes(env, PATH_INFO, 1, path.p, path.n) < 0)
            return -1;
    } else if ((script.p == NULL && put_bytes(env, SCRIPT_NAME, 0, NULL, 0) < 0) ||
               (path.p == NULL && put_bytes(env, PATH_INFO, 0, NULL, 0) < 0)) {
        return -1;
    }
    if (seen[QUERY_STRING].p == NULL && put_bytes(env, QUERY_STRING, 0, NULL, 0) < 0)
        return -1;

    int secure = is(seen[HTTPS], "on") || is(seen[HTTPS], "1") || is(seen[REQUEST_SCHEME], "https");
    if (put_shared(env, URL_SCHEME, secure ? https : http) < 0)
        return -1;

    if (seen[SERVER_NAME].n == 0 || seen[SERVER_PORT].n == 0) {
        struct span host = seen[HTTP_HOST], name = host, port = {NULL, 0};
        Py_ssize_t colon = host.n - 1;
        while (colon >= 0 && host.p[colon] != ':')
            colon--;
        if (colon >= 0 && !memchr(host.p + colon, ']', host.n - colon)) {
            name.n = colon;
            port = (struct span){host.p + colon + 1, host.n - colon - 1};
        }
        if (seen[SERVER_NAME].n == 0 && (host.n == 0 ? put_shared(env, SERVER_NAME, localhost)
                                                     : put_bytes(env, SERVER_NAME, 0, name.p, name.n)) < 0)
            return -1;
        if (seen[SERVER_PORT].n == 0 && (port.n == 0 ? put_shared(env, SERVER_PORT, secure ? port443 : port80)
                                                     : put_bytes(env, SERVER_PORT, 0, port.p, port.n)) < 0)
            return -1;
    }
    *to_eof = *length < 0 && holds(seen[HTTP_TRANSFER_ENCODING], "chunked");
    return PLAIN;
}

PyDoc_STRVAR(request_doc,
"request(buf, start, end, max_bytes, max_pairs, mount) -> None or\n"
"(next, rid, keep, stdin_ended, (environ, content_length, to_eof))\n\n"
"Reads a request's BEGIN_REQUEST and PARAMS records from buf[start:end]\n"
"(a bytearray), and its STDIN's end when it follows at once, and makes\n"
"its environ as environ.py's make_environ does (mount: None, the default\n"
"rule; b\"keep\"; or the mount point's latin-1 bytes). next is where the\n"
"unread records begin. None:\n"
"the records are not all there or not plain (see the top of fastpath.c),\n"
"the params are over max_bytes or max_pairs, or make_environ would refuse\n"
"them.");

static PyObject *
request(PyObject *self, PyObject *args)
{
    PyObject *buf, *mount_obj;
    Py_ssize_t start, end, max_bytes, max_pairs;
    if (!PyArg_ParseTuple(args, "O!nnnnO", &PyByteArray_Type, &buf, &start, &end, &max_bytes, &max_pairs,
                          &mount_obj))
        return NULL;
    const unsigned char *mount = NULL;
    Py_ssize_t mount_n = 0;
    enum mount_mode mode = MOUNT_AUTO;
    if (mount_obj != Py_None) {
        if (!PyBytes_Check(mount_obj)) {
            PyErr_SetString(PyExc_TypeError, "mount must be bytes or None");
            return NULL;
        }
        mount = (const unsigned char *)PyBytes_AsString(mount_obj);
        mount_n = PyBytes_Size(mount_obj);
        mode = mount_n == 4 && memcmp(mount, "keep", 4) == 0 ? MOUNT_KEEP : MOUNT_AT;
    }
    if (start < 0 || start > end || end > PyByteArray_Size(buf))
        Py_RETURN_NONE;
    const unsigned char *p = (const unsigned char *)PyByteArray_AsString(buf);

    Py_ssize_t i = start;
    if (!whole(p, i, end))
        Py_RETURN_NONE;
    struct record r = record_at(p + i);
    const unsigned char *body = p + i + 8;
    if (r.kind != BEGIN_REQUEST || r.rid == 0 || r.content != 8 || (body[0] << 8 | body[1]) != RESPONDER)
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
    struct span seen[KNOWN] = {{NULL, 0}};
    long long length = -1;
    int to_eof = 0;
    PyObject *env = PyDict_New();
    int got = env == NULL ? -1 : decode_pairs(data, total, max_pairs, env, seen);
    if (got == PLAIN)
        got = make_environ(env, seen, mode, mount, mount_n, &length, &to_eof);
    PyMem_Free(joined);
    if (got != PLAIN) {
        Py_XDECREF(env);
        if (got < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(nINN(NLN))", i, rid, PyBool_FromLong(keep), PyBool_FromLong(stdin_ended), env, length,
                         PyBool_FromLong(to_eof));
}

enum { MAX_HEADER_BLOCK = 32 * 1024 };

/* Room for a header block's characters, as the str API gives them. */
static Py_UCS4 chars[MAX_HEADER_BLOCK];

/* Appends the latin-1 bytes of the str s to block, which holds *n bytes;
 * 1 when s is not latin-1 or the block would pass MAX_HEADER_BLOCK. */
static int
append(char *block, Py_ssize_t *n, PyObject *s)
{
    Py_ssize_t len = PyUnicode_GetLength(s);
    if (len < 0)
        return -1;
    if (len > MAX_HEADER_BLOCK - *n)
        return DECLINED;
    if (len > 0 && PyUnicode_AsUCS4(s, chars, MAX_HEADER_BLOCK, 0) == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (chars[i] > 255)
            return DECLINED;
        block[*n + i] = (char)chars[i];
    }
    *n += len;
    return PLAIN;
}

static int
append_bytes(char *block, Py_ssize_t *n, const char *s)
{
    Py_ssize_t len = (Py_ssize_t)strlen(s);
    if (len > MAX_HEADER_BLOCK - *n)
        return DECLINED;
    memcpy(block + *n, s, len);
    *n += len;
    return PLAIN;
}

/* Names header_block refuses: hop-by-hop headers, and Status. */
static const char *const refused_names[] = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "status", NULL,
};

/* Checks one header, whose name is block[name:value - 2] and value
 * block[value:end], as header_block does; notes a Content-Length, and
 * whether it is a Location. */
static int
check_header(const unsigned char *block, Py_ssize_t name, Py_ssize_t value, Py_ssize_t end, long long *length,
             int *location)
{
    struct span s = {block + name, value - 2 - name};
    if (s.n == 0)
        return DECLINED;
    for (Py_ssize_t i = 0; i < s.n; i++)
        if (!tchar(s.p[i]))
            return DECLINED;
    for (Py_ssize_t i = value; i < end; i++)
        if (control(block[i]))
            return DECLINED;
    for (int h = 0; refused_names[h] != NULL; h++)
        if (is(s, refused_names[h]))
            return DECLINED;
    if (is(s, "location"))
        *location = 1;
    if (is(s, "content-length")) {
        if (end == value || end - value > 18 || !digits(block + value, end - value))
            return DECLINED;
        *length = 0;
        for (Py_ssize_t i = value; i < end; i++)
            *length = *length * 10 + (block[i] - '0');
    }
    return PLAIN;
}

PyDoc_STRVAR(head_doc,
"head(status, headers) -> None or (block, content_length or None)\n\n"
"The CGI header block for a status and header list, as wsgi.py's\n"
"header_block makes it; None where header_block would raise, or the\n"
"types are not the plain ones (str, a list of 2-tuples of str).");

static PyObject *
head(PyObject *self, PyObject *args)
{
    PyObject *status, *headers;
    if (!PyArg_ParseTuple(args, "OO", &status, &headers))
        return NULL;
    if (!PyUnicode_CheckExact(status) || !PyList_CheckExact(headers))
        Py_RETURN_NONE;
    static char block[MAX_HEADER_BLOCK];
    Py_ssize_t n = 0;
    int got = append_bytes(block, &n, "Status: ");
    if (got == PLAIN)
        got = append(block, &n, status);
    if (got != PLAIN)
        goto out;
    const unsigned char *raw = (const unsigned char *)block + 8;
    if (n - 8 < 4 || !digits(raw, 3) || raw[0] == '0' || raw[3] != ' ')
        Py_RETURN_NONE;
    for (Py_ssize_t i = 8; i < n; i++)
        if (control((unsigned char)block[i]))
            Py_RETURN_NONE;

    long long length = -1;
    int location = 0;
    Py_ssize_t status_end = n, count = PyList_Size(headers);
    for (Py_ssize_t h = 0; h < count && got == PLAIN; h++) {
        PyObject *item = PyList_GetItem(headers, h);
        if (!PyTuple_CheckExact(item) || PyTuple_Size(item) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GetItem(item, 0)) || !PyUnicode_CheckExact(PyTuple_GetItem(item, 1)))
            Py_RETURN_NONE;
        Py_ssize_t name = n + 2, value;
        if ((got = append_bytes(block, &n, "\r\n")) != PLAIN || (got = append(block, &n, PyTuple_GetItem(item, 0))) != PLAIN ||
            (got = append_bytes(block, &n, ": ")) != PLAIN)
            break;
        value = n;
        if ((got = append(block, &n, PyTuple_GetItem(item, 1))) == PLAIN)
            got = check_header((const unsigned char *)block, name, value, n, &length, &location);
    }
    if (got == PLAIN)
        got = append_bytes(block, &n, "\r\n\r\n");
out:
    if (got < 0)
        return NULL;
    if (got != PLAIN)
        Py_RETURN_NONE;
    /* A 200 without a Location has no Status line (as header_block). */
    Py_ssize_t from = 0;
    if (count > 0 && !location && memcmp(raw, "200 ", 4) == 0)
        from = status_end + 2;
    if (length < 0)
        return Py_BuildValue("(y#O)", block + from, n - from, Py_None);
    return Py_BuildValue("(y#L)", block + from, n - from, length);
}

PyDoc_STRVAR(accept_doc,
"accept(fd, probe) -> fd or None\n\n"
"Accepts a connection, close-on-exec, on the non-blocking listening socket\n"
"fd; None when none waits (or a signal came first). probe: looks first,\n"
"with poll, whether one waits: Linux makes and frees a socket for an\n"
"accept that finds the queue empty (3.4 us against poll's 0.4 on the\n"
"bench machine), and a worker whose connections are not kept finds it\n"
"empty after about every other request under load.");

static PyObject *
accept_conn(PyObject *self, PyObject *args)
{
    int fd, probe;
    if (!PyArg_ParseTuple(args, "ip", &fd, &probe))
        return NULL;
    if (probe) {
        struct pollfd waiting = {fd, POLLIN, 0};
        if (poll(&waiting, 1, 0) <= 0)
            Py_RETURN_NONE;
    }
    int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (conn >= 0)
        return PyLong_FromLong(conn);
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        Py_RETURN_NONE;
    return PyErr_SetFromErrno(PyExc_OSError);
}

static PyMethodDef methods[] = {
    {"request", request, METH_VARARGS, request_doc},
    {"head", head, METH_VARARGS, head_doc},
    {"accept", accept_conn, METH_VARARGS, accept_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The FastCGI worker's fast path; see fastpath.c.", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    for (int k = 0; k < KNOWN; k++)
        if ((keys[k] = PyUnicode_InternFromString(known_names[k])) == NULL)
            return NULL;
    if ((empty = PyUnicode_FromStringAndSize("", 0)) == NULL || (http = PyUnicode_InternFromString("http")) == NULL ||
        (https = PyUnicode_InternFromString("https")) == NULL ||
        (localhost = PyUnicode_InternFromString("localhost")) == NULL ||
        (port80 = PyUnicode_InternFromString("80")) == NULL || (port443 = PyUnicode_InternFromString("443")) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
