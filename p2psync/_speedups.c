/* p2psync._speedups: the hot check of a first sync, in C.

   Every field of every incoming ref.put must be in normal form (model/fields.py: is_normal).
   In Python that check is most of the cost of receiving a large library, a few hundred
   nanoseconds per field for a million fields. This module proves the common case quickly and
   leaves everything else to Python:

       unproven_fields(fields) -> None | list[str]

   None means every field of the dict was proven to be in normal form, exactly as
   fields.NORMAL_CHECKS defines it. Otherwise the list names the fields it could not prove
   (a null, a system flag, an unknown name, or a value that is not normal), in the dict's
   order, and Python checks those with its own rules and gives the precise error. So this code
   only has to be sound: it may never prove a value that Python would refuse.
   tests/test_speedups.py holds it to exact agreement with the Python checks.

       proven_ref_puts(entries, first) -> int

   How many leading entries of a change set body are [seq, ts, op] with seq = first, first + 1,
   ..., a timestamp in range, and op a ref.put with a valid id, fields proven as above and an
   empty "seen" (a reference created from nothing: nearly every entry of a first sync). Python
   checks the rest of the entries in full (engine/changesets.parse).

   configure() is called once, by model/fields.py, with the catalogue (field name -> kind code)
   and the limits, so that the catalogue is written down once, in Python.

   p2psync works without this module (a machine with no C compiler): fields.py then uses the
   Python checks alone. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum kind { K_TEXT = 1, K_LONG, K_PEOPLE, K_LIST, K_TYPE, K_YEAR, K_DOI, K_DATE, K_ADDED };

static PyObject *kinds = NULL;      /* dict: field name -> kind code */
static PyObject *types = NULL;      /* dict: reference type key -> label */
static PyObject *key_family = NULL, *key_given = NULL, *key_literal = NULL;
static Py_ssize_t max_text, max_long, max_people, max_list;
static long long max_int; /* ops.MAX_INT, also the limit of sequence numbers and times */
static PyObject *key_op = NULL, *key_ref = NULL, *key_fields = NULL, *key_seen = NULL, *ref_put = NULL;

/* ASCII white space: \t \n \v \f \r, the separators \x1c-\x1f, and the space. */
static int ascii_white(unsigned char c) { return (unsigned)(c - 9) < 5u || (unsigned)(c - 28) < 5u; }

/* space_normal for ASCII text (most text), written without early exits so that the compiler
   turns the loop into vector instructions: it reads abstracts of a whole library. */
static int ascii_space_normal(const unsigned char *p, Py_ssize_t n)
{
    if (p[0] == ' ' || p[n - 1] == ' ')
        return 0;
    unsigned bad = 0;
    for (Py_ssize_t i = 0; i + 1 < n; i++) {
        unsigned char c = p[i];
        bad |= ((unsigned)(c - 9) < 5u) | ((unsigned)(c - 28) < 4u) | ((c == ' ') & (p[i + 1] == ' '));
    }
    return !(bad | ascii_white(p[n - 1]));
}

/* Text that " ".join(text.split()) leaves unchanged and that is not empty: no white space but
   single spaces between words. With no_surrogates, also encodable as UTF-8 (no lone surrogate). */
static int space_normal(PyObject *s, int no_surrogates)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (n == 0)
        return 0;
    if (PyUnicode_IS_ASCII(s))
        return ascii_space_normal(PyUnicode_1BYTE_DATA(s), n);
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_UCS4 prev = ' '; /* as if after a space: a leading space is refused */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch == ' ') {
            if (prev == ' ')
                return 0;
        }
        else if (Py_UNICODE_ISSPACE(ch)) {
            return 0;
        }
        else if (no_surrogates && ch >= 0xD800 && ch <= 0xDFFF) {
            return 0;
        }
        prev = ch;
    }
    return prev != ' ';
}

static int normal_text(PyObject *v)
{
    return PyUnicode_CheckExact(v) && PyUnicode_GET_LENGTH(v) <= max_text && space_normal(v, 1);
}

/* value == value.strip(), no CR LF, no lone surrogate, 1..max_long characters. */
static int normal_long(PyObject *v)
{
    if (!PyUnicode_CheckExact(v))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    if (n == 0 || n > max_long)
        return 0;
    if (PyUnicode_IS_ASCII(v)) { /* no surrogates; vectorised like ascii_space_normal */
        const unsigned char *p = PyUnicode_1BYTE_DATA(v);
        unsigned bad = ascii_white(p[0]) | ascii_white(p[n - 1]);
        for (Py_ssize_t i = 0; i + 1 < n; i++)
            bad |= (p[i] == '\r') & (p[i + 1] == '\n');
        return !bad;
    }
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    if (Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, 0)) || Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, n - 1)))
        return 0;
    Py_UCS4 prev = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if ((ch == '\n' && prev == '\r') || (ch >= 0xD800 && ch <= 0xDFFF))
            return 0;
        prev = ch;
    }
    return 1;
}

/* A person part: exact str, not empty, space-normal (fields._normal_person checks no more). */
static int normal_part(PyObject *v)
{
    return v != NULL && PyUnicode_CheckExact(v) && space_normal(v, 0);
}

static int normal_person(PyObject *p)
{
    if (!PyDict_CheckExact(p))
        return 0;
    Py_ssize_t n = PyDict_GET_SIZE(p);
    if (n == 1) {
        PyObject *literal = PyDict_GetItemWithError(p, key_literal);
        if (literal != NULL)
            return normal_part(literal);
        if (PyErr_Occurred())
            return -1;
    }
    PyObject *family = PyDict_GetItemWithError(p, key_family);
    if (family == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!normal_part(family))
        return 0;
    if (n == 1)
        return 1;
    if (n != 2)
        return 0;
    PyObject *given = PyDict_GetItemWithError(p, key_given);
    if (given == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return normal_part(given);
}

/* A list of 1..limit items that each pass check: 1, or the first 0 (or -1, an error) it gives. */
static int list_of(PyObject *v, Py_ssize_t limit, int (*check)(PyObject *))
{
    if (!PyList_CheckExact(v))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(v);
    if (n == 0 || n > limit)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int ok = check(PyList_GET_ITEM(v, i));
        if (ok <= 0)
            return ok;
    }
    return 1;
}

static int normal_people(PyObject *v) { return list_of(v, max_people, normal_person); }

static int normal_list(PyObject *v)
{
    int ok = list_of(v, max_list, normal_text);
    if (ok <= 0)
        return ok;
    Py_ssize_t n = PyList_GET_SIZE(v);
    if (n == 1)
        return 1;
    PyObject *unique = PySet_New(v); /* no item twice */
    if (unique == NULL)
        return -1;
    Py_ssize_t distinct = PySet_GET_SIZE(unique);
    Py_DECREF(unique);
    return distinct == n;
}

static int ascii_digit(Py_UCS4 ch) { return ch >= '0' && ch <= '9'; }
static int ascii_letter(Py_UCS4 ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }
static Py_UCS4 ascii_lower(Py_UCS4 ch) { return (ch >= 'A' && ch <= 'Z') ? ch + 32 : ch; }

/* The year pattern of fields._YEAR, matched whole, with its flags (IGNORECASE, ASCII):
   1 to 4 digits and an optional letter, or one of the words. */
static int normal_year(PyObject *v)
{
    static const char *words[] = {"in press", "forthcoming", "n.d.", "submitted"};
    if (!normal_text(v))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    Py_ssize_t digits = 0;
    while (digits < n && digits < 4 && ascii_digit(PyUnicode_READ(kind, data, digits)))
        digits++;
    if (digits > 0 && (n == digits || (n == digits + 1 && ascii_letter(PyUnicode_READ(kind, data, digits)))))
        return 1;
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        const char *word = words[w];
        if ((Py_ssize_t)strlen(word) != n)
            continue;
        Py_ssize_t i = 0;
        while (i < n && ascii_lower(PyUnicode_READ(kind, data, i)) == (Py_UCS4)word[i])
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

static int normal_doi(PyObject *v)
{
    if (!normal_text(v) || PyUnicode_GET_LENGTH(v) < 3)
        return 0;
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    return PyUnicode_READ(kind, data, 0) == '1' && PyUnicode_READ(kind, data, 1) == '0' &&
           PyUnicode_READ(kind, data, 2) == '.';
}

/* Two ASCII digits at i, as a number, or -1. */
static int two_digits(int kind, const void *data, Py_ssize_t i)
{
    Py_UCS4 a = PyUnicode_READ(kind, data, i), b = PyUnicode_READ(kind, data, i + 1);
    if (!ascii_digit(a) || !ascii_digit(b))
        return -1;
    return (int)(a - '0') * 10 + (int)(b - '0');
}

/* YYYY, YYYY-MM or YYYY-MM-DD with a month 1..12 and a day 1..31 (fields._DATE, _plausible_date). */
static int normal_date(PyObject *v)
{
    if (!PyUnicode_CheckExact(v))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    if (n != 4 && n != 7 && n != 10)
        return 0;
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    for (Py_ssize_t i = 0; i < 4; i++) {
        if (!ascii_digit(PyUnicode_READ(kind, data, i)))
            return 0;
    }
    if (n >= 7) {
        int month = PyUnicode_READ(kind, data, 4) == '-' ? two_digits(kind, data, 5) : -1;
        if (month < 1 || month > 12)
            return 0;
    }
    if (n == 10) {
        int day = PyUnicode_READ(kind, data, 7) == '-' ? two_digits(kind, data, 8) : -1;
        if (day < 1 || day > 31)
            return 0;
    }
    return 1;
}

/* An exact int (not a bool) in 0..limit, stored in *out: 1, 0 if not, -1 on error. */
static int count_upto(PyObject *v, long long limit, long long *out)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = x;
    return !overflow && x >= 0 && x <= limit;
}

/* The added time: a count of milliseconds (ops._check_ref_fields). */
static int normal_added(PyObject *v)
{
    long long x;
    return count_upto(v, max_int, &x);
}

/* 1 if value is proven normal for a field of this kind, 0 if not proven, -1 on error. */
static int proven(long kind, PyObject *value)
{
    switch (kind) {
    case K_TEXT: return normal_text(value);
    case K_LONG: return normal_long(value);
    case K_PEOPLE: return normal_people(value);
    case K_LIST: return normal_list(value);
    case K_TYPE: return PyUnicode_CheckExact(value) ? PyDict_Contains(types, value) : 0;
    case K_YEAR: return normal_year(value);
    case K_DOI: return normal_doi(value);
    case K_DATE: return normal_date(value);
    case K_ADDED: return normal_added(value);
    default: return 0;
    }
}

static PyObject *unproven_fields(PyObject *module, PyObject *fields)
{
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "p2psync._speedups.configure() was not called");
        return NULL;
    }
    if (!PyDict_CheckExact(fields)) {
        PyErr_SetString(PyExc_TypeError, "unproven_fields() takes a dict");
        return NULL;
    }
    PyObject *unproven = NULL;
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(fields, &pos, &name, &value)) {
        int ok = 0;
        PyObject *code = PyUnicode_CheckExact(name) ? PyDict_GetItemWithError(kinds, name) : NULL;
        if (code == NULL && PyErr_Occurred())
            goto error;
        if (code != NULL && value != Py_None) {
            ok = proven(PyLong_AsLong(code), value);
            if (ok < 0)
                goto error;
        }
        if (!ok) {
            if (unproven == NULL && (unproven = PyList_New(0)) == NULL)
                goto error;
            if (PyList_Append(unproven, name) < 0)
                goto error;
        }
    }
    if (unproven == NULL)
        Py_RETURN_NONE;
    return unproven;
error:
    Py_XDECREF(unproven);
    return NULL;
}

/* An object id: exactly 16 characters of [a-z2-7] (model/ids.ID_PATTERN). */
static int is_object_id(PyObject *v)
{
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 16)
        return 0;
    const unsigned char *p = PyUnicode_1BYTE_DATA(v);
    for (int i = 0; i < 16; i++) {
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '2' && p[i] <= '7')))
            return 0;
    }
    return 1;
}

/* 1 if item is [expected, ts, {"fields", "op": "ref.put", "ref", "seen": {}}], all proven. */
static int proven_ref_put(PyObject *item, long long expected)
{
    long long number;
    if (!PyList_CheckExact(item) || PyList_GET_SIZE(item) != 3)
        return 0;
    int ok = count_upto(PyList_GET_ITEM(item, 0), max_int, &number);
    if (ok <= 0 || number != expected)
        return ok < 0 ? -1 : 0;
    ok = count_upto(PyList_GET_ITEM(item, 1), max_int, &number);
    if (ok <= 0)
        return ok;
    PyObject *op = PyList_GET_ITEM(item, 2);
    if (!PyDict_CheckExact(op) || PyDict_GET_SIZE(op) != 4)
        return 0;
    PyObject *kind = PyDict_GetItemWithError(op, key_op);
    PyObject *ref = kind ? PyDict_GetItemWithError(op, key_ref) : NULL;
    PyObject *fields = ref ? PyDict_GetItemWithError(op, key_fields) : NULL;
    PyObject *seen = fields ? PyDict_GetItemWithError(op, key_seen) : NULL;
    if (seen == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (!PyUnicode_CheckExact(kind) || PyUnicode_Compare(kind, ref_put) != 0)
        return 0;
    if (!is_object_id(ref) || !PyDict_CheckExact(seen) || PyDict_GET_SIZE(seen) != 0)
        return 0;
    if (!PyDict_CheckExact(fields) || PyDict_GET_SIZE(fields) == 0)
        return 0;
    PyObject *unproven = unproven_fields(NULL, fields);
    if (unproven == NULL)
        return -1;
    ok = unproven == Py_None;
    Py_DECREF(unproven);
    return ok;
}

static PyObject *proven_ref_puts(PyObject *module, PyObject *args)
{
    PyObject *entries;
    long long first;
    if (!PyArg_ParseTuple(args, "O!L", &PyList_Type, &entries, &first))
        return NULL;
    if (kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "p2psync._speedups.configure() was not called");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(entries), i = 0;
    for (; i < n; i++) {
        int ok = proven_ref_put(PyList_GET_ITEM(entries, i), first + i);
        if (ok < 0)
            return NULL;
        if (!ok)
            break;
    }
    return PyLong_FromSsize_t(i);
}

static PyObject *configure(PyObject *module, PyObject *args)
{
    PyObject *new_kinds, *new_types;
    Py_ssize_t text, long_, people, list;
    long long integer;
    if (!PyArg_ParseTuple(args, "O!O!nnnnL", &PyDict_Type, &new_kinds, &PyDict_Type, &new_types, &text, &long_,
                          &people, &list, &integer))
        return NULL;
    Py_INCREF(new_kinds);
    Py_INCREF(new_types);
    Py_XSETREF(kinds, new_kinds);
    Py_XSETREF(types, new_types);
    max_text = text;
    max_long = long_;
    max_people = people;
    max_list = list;
    max_int = integer;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"unproven_fields", unproven_fields, METH_O,
     "unproven_fields(fields) -> None if every field is proven in normal form, else the names not proven."},
    {"configure", configure, METH_VARARGS,
     "configure(kinds, types, max_text, max_long, max_people, max_list, max_int): the catalogue and limits."},
    {"proven_ref_puts", proven_ref_puts, METH_VARARGS,
     "proven_ref_puts(entries, first) -> how many leading entries are proven ref.puts of new references."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "p2psync._speedups", "The hot field check of a first sync, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    key_family = PyUnicode_InternFromString("family");
    key_given = PyUnicode_InternFromString("given");
    key_literal = PyUnicode_InternFromString("literal");
    key_op = PyUnicode_InternFromString("op");
    key_ref = PyUnicode_InternFromString("ref");
    key_fields = PyUnicode_InternFromString("fields");
    key_seen = PyUnicode_InternFromString("seen");
    ref_put = PyUnicode_InternFromString("ref.put");
    if (key_family == NULL || key_given == NULL || key_literal == NULL || key_op == NULL || key_ref == NULL ||
        key_fields == NULL || key_seen == NULL || ref_put == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
