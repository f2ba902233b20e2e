/* The compiled sparse-run decoder: one pass over a buffer of RecordIO frames carrying sparse
 * aialgs.data.Record messages, filling CSR arrays; and the frame-header walk that cuts a stream
 * into chunks of whole records for several decoding threads (pipealgos/io/parallel.py). See pipealgos/io/sparse_run.py for the
 * record layout it accepts, the checks it makes, and how it is called (twice per run: once to
 * count, once to fill arrays of exactly that size).
 *
 * Only the buffer protocol is used (no numpy headers): the caller allocates the outputs.
 * Every read is bounds-checked against the frame, so any input bytes are safe to pass.
 *
 * Ranges, so that no arithmetic here can wrap: a frame's length is below 2**29 and every
 * varint read is at most 4 bytes (< 2**28), so lengths, value counts and byte counts fit
 * 32 bits and their sums fit Py_ssize_t (they are bounded by the buffer's size). The shape
 * must be exactly one such varint, 1 <= dim < 2**28, so keys (checked < dim) fit the int32
 * indices and no product of dimensions is ever formed: a wider or multi-dimensional shape
 * ends the run, and the general path (pipealgos/io/protobuf.py) multiplies it exactly and
 * range-checks it. float64 values beyond float32's range convert to +-inf (IEEE 754, as
 * numpy casts them), which the decoder's finiteness check then refuses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "little-endian hosts only: values are copied as they lie in the frames"
#endif

#define MAGIC 0xCED7230Au
#define LENGTH_MASK ((1u << 29) - 1)
#define TAG_FLOAT32 0x12 /* Value.float32_tensor */
#define TAG_FLOAT64 0x1A /* Value.float64_tensor */

/* Label entries accepted: 16 constant bytes, then the value (float32, float64, or an int32
 * varint below 128). The same table as _LABELS in sparse_run.py. */
static const struct {
    unsigned char prefix[16];
    size_t size;
} LABELS[] = {
    {"\x12\x12\x0a\x06values\x12\x08\x12\x06\x0a\x04", 4},
    {"\x12\x16\x0a\x06values\x12\x0c\x1a\x0a\x0a\x08", 8},
    {"\x12\x0f\x0a\x06values\x12\x05\x3a\x03\x0a\x01", 1},
};
enum { LABEL_NONE = -1, LABEL_F32 = 0, LABEL_F64 = 1, LABEL_SMALL_INT = 2 };

/* A varint of at most 4 bytes (< 2**28) at *p, ending before end: 1 and *p moved past it,
 * or 0 when it is longer or cut off. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint32_t *value)
{
    const uint8_t *q = *p;
    uint32_t v = 0;
    for (int shift = 0; shift < 28; shift += 7) {
        if (q >= end)
            return 0;
        uint8_t byte = *q++;
        v |= (uint32_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *p = q;
            *value = v;
            return 1;
        }
    }
    return 0;
}

/* A length-delimited field's length at *p: the varint, which must also fit before end. */
static int read_length(const uint8_t **p, const uint8_t *end, uint32_t *length)
{
    return read_varint(p, end, length) && *length <= (size_t)(end - *p);
}

/* Where the parts of one sparse record lie. */
typedef struct {
    uint8_t tensor_tag;
    const uint8_t *values; /* packed float32 / float64 */
    uint32_t nnz;
    const uint8_t *keys, *keys_end; /* packed varints */
    uint32_t dim;
    int label_kind;
    const uint8_t *label;
} Layout;

/* Parse the payload p[0 : pe - p] as the fixed field sequence of a sparse record; 0 when it
 * is anything else. Keys are located, not decoded. */
static int parse_record(const uint8_t *p, const uint8_t *pe, Layout *r)
{
    uint32_t length;
    /* Record.features entry {key: "values", value: Value{tensor}}; nested lengths add up. */
    if (p >= pe || *p++ != 0x0A || !read_length(&p, pe, &length))
        return 0;
    const uint8_t *entry_end = p + length;
    if (entry_end - p < 9 || memcmp(p, "\x0a\x06values\x12", 9) != 0)
        return 0;
    p += 9;
    if (!read_length(&p, entry_end, &length) || p + length != entry_end || p == entry_end)
        return 0;
    r->tensor_tag = *p++;
    if (r->tensor_tag != TAG_FLOAT32 && r->tensor_tag != TAG_FLOAT64)
        return 0;
    if (!read_length(&p, entry_end, &length) || p + length != entry_end)
        return 0;
    /* Tensor fields in order: values (optional), keys (optional), shape = [dim]. */
    uint32_t values_len = 0;
    r->values = p;
    if (p < entry_end && *p == 0x0A) {
        p++;
        if (!read_length(&p, entry_end, &values_len))
            return 0;
        r->values = p;
        p += values_len;
    }
    int has_keys = p < entry_end && *p == 0x12;
    r->keys = r->keys_end = p;
    if (has_keys) {
        p++;
        if (!read_length(&p, entry_end, &length))
            return 0;
        r->keys = p;
        p += length;
        r->keys_end = p;
    }
    uint32_t shape_len;
    if (p >= entry_end || *p++ != 0x1A || !read_varint(&p, entry_end, &shape_len))
        return 0;
    const uint8_t *shape = p;
    if (!read_varint(&p, entry_end, &r->dim) || (size_t)(p - shape) != shape_len || p != entry_end)
        return 0;
    size_t item = r->tensor_tag == TAG_FLOAT32 ? 4 : 8;
    if (values_len % item || (!has_keys && values_len) || r->dim == 0)
        return 0;
    r->nnz = (uint32_t)(values_len / item);
    /* Nothing after the features entry, or one label entry of a known layout. */
    r->label_kind = LABEL_NONE;
    r->label = NULL;
    if (entry_end == pe)
        return 1;
    for (int kind = 0; kind < (int)(sizeof LABELS / sizeof LABELS[0]); kind++) {
        if ((size_t)(pe - entry_end) == 16 + LABELS[kind].size && memcmp(entry_end, LABELS[kind].prefix, 16) == 0
            && (kind != LABEL_SMALL_INT || entry_end[16] < 0x80)) {
            r->label_kind = kind;
            r->label = entry_end + 16;
            return 1;
        }
    }
    return 0;
}

/* Decode the record's keys into out[0 : nnz]: exactly nnz varints, each below dim, filling the
 * packed field exactly. 0 otherwise. */
static int decode_keys(const Layout *r, int32_t *out)
{
    const uint8_t *p = r->keys;
    for (uint32_t i = 0; i < r->nnz; i++) {
        uint32_t key;
        if (!read_varint(&p, r->keys_end, &key) || key >= r->dim)
            return 0;
        out[i] = (int32_t)key;
    }
    return p == r->keys_end;
}

static void copy_values(const Layout *r, float *out)
{
    if (r->tensor_tag == TAG_FLOAT32) {
        memcpy(out, r->values, (size_t)r->nnz * 4);
        return;
    }
    for (uint32_t i = 0; i < r->nnz; i++) {
        double value;
        memcpy(&value, r->values + 8 * (size_t)i, 8);
        out[i] = (float)value;
    }
}

static float label_value(const Layout *r)
{
    float f;
    double d;
    switch (r->label_kind) {
    case LABEL_F32:
        memcpy(&f, r->label, 4);
        return f;
    case LABEL_F64:
        memcpy(&d, r->label, 8);
        return (float)d;
    default:
        return (float)r->label[0];
    }
}

/* Output arrays (fill mode) and their capacities. */
typedef struct {
    float *data;
    int32_t *indices;
    int64_t *indptr;
    float *labels; /* NULL when the run has no labels */
    Py_ssize_t nnz_capacity, row_capacity;
} Outputs;

typedef struct {
    Py_ssize_t count, nbytes, nnz;
    long long dim;
    int labelled;
} Summary;

/* Walk whole frames from buf[pos] while they hold sparse records agreeing with each other and
 * with feature_dim / has_labels (-1: not known yet). A frame is taken when its header lies in
 * the first min(end - pos, window) bytes (rounded down to 4) and its padded end is within end.
 * With out == NULL the records are only counted; otherwise their keys are decoded and checked
 * too, the walk ending before the first record whose keys do not fit. */
static void walk(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t window, long long feature_dim,
                 int has_labels, Outputs *out, Summary *s)
{
    Py_ssize_t limit = pos + ((end - pos < window ? end - pos : window) & ~(Py_ssize_t)3);
    Py_ssize_t frame = pos, count = 0, nnz = 0;
    uint8_t tensor_tag = 0;
    if (out != NULL)
        out->indptr[0] = 0;
    while (frame + 8 <= limit) {
        uint32_t magic, lrec;
        memcpy(&magic, buf + frame, 4);
        memcpy(&lrec, buf + frame + 4, 4);
        if (magic != MAGIC || lrec >> 29)
            break;
        Py_ssize_t length = lrec & LENGTH_MASK;
        if ((length + 3) / 4 * 4 > end - frame - 8)
            break;
        Layout r;
        const uint8_t *payload = buf + frame + 8;
        if (!parse_record(payload, payload + length, &r) || (tensor_tag && r.tensor_tag != tensor_tag)
            || (feature_dim >= 0 && r.dim != feature_dim) || (has_labels >= 0 && (r.label_kind >= 0) != has_labels))
            break;
        if (out != NULL) {
            if (count >= out->row_capacity || r.nnz > out->nnz_capacity - nnz || (out->labels != NULL) != (r.label_kind >= 0)
                || !decode_keys(&r, out->indices + nnz))
                break;
            copy_values(&r, out->data + nnz);
            if (out->labels != NULL)
                out->labels[count] = label_value(&r);
            out->indptr[count + 1] = nnz + r.nnz;
        }
        tensor_tag = r.tensor_tag;
        feature_dim = r.dim;
        has_labels = r.label_kind >= 0;
        nnz += r.nnz;
        count++;
        frame += 8 + (length + 3) / 4 * 4;
    }
    s->count = count;
    s->nbytes = frame - pos;
    s->nnz = nnz;
    s->dim = feature_dim;
    s->labelled = has_labels;
}

/* A writable output buffer holding at least `needed` items of `itemsize` bytes. */
static int output_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return 0;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: items of %zd bytes expected", name, itemsize);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(walk_doc,
             "walk(buf, pos, end, window, feature_dim, has_labels, outputs=None)\n"
             "-> (count, nbytes, nnz, feature_dim, has_labels)\n\n"
             "The leading run of sparse records in buf[pos:end] (pos 4-aligned; frames starting\n"
             "within `window` bytes). feature_dim, has_labels: -1 when not known yet. outputs:\n"
             "None to count the run, or (data float32, indices int32, indptr int64, labels\n"
             "float32 or None) to fill: then keys are checked too and the run may come out shorter.");

static PyObject *py_walk(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer in;
    Py_ssize_t pos, end, window;
    long long feature_dim;
    int has_labels;
    PyObject *outputs = Py_None;
    if (!PyArg_ParseTuple(args, "y*nnnLi|O:walk", &in, &pos, &end, &window, &feature_dim, &has_labels, &outputs))
        return NULL;
    PyObject *result = NULL;
    Py_buffer views[4];
    int held = 0;
    Outputs out = {0};
    if (pos < 0 || pos % 4 || end > in.len || window < 0) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= pos (4-aligned), end <= len(buf), window >= 0");
        goto done;
    }
    if (outputs != Py_None) {
        static const Py_ssize_t itemsizes[4] = {4, 4, 8, 4};
        static const char *names[4] = {"data", "indices", "indptr", "labels"};
        PyObject *arrays[4];
        if (!PyArg_ParseTuple(outputs, "OOOO:outputs", &arrays[0], &arrays[1], &arrays[2], &arrays[3]))
            goto done;
        for (; held < 4; held++) {
            if (arrays[held] == Py_None && held == 3)
                break;
            if (!output_buffer(arrays[held], &views[held], itemsizes[held], names[held]))
                goto done;
        }
        out.data = views[0].buf;
        out.indices = views[1].buf;
        out.indptr = views[2].buf;
        out.labels = held == 4 ? views[3].buf : NULL;
        out.nnz_capacity = views[0].len / 4 < views[1].len / 4 ? views[0].len / 4 : views[1].len / 4;
        out.row_capacity = views[2].len / 8 - 1;
        if (out.labels != NULL && views[3].len / 4 < out.row_capacity)
            out.row_capacity = views[3].len / 4;
        if (out.row_capacity < 0) {
            PyErr_SetString(PyExc_ValueError, "indptr must hold at least one item");
            goto done;
        }
    }
    Summary s;
    Py_BEGIN_ALLOW_THREADS
    walk(in.buf, pos, end < pos ? pos : end, window, feature_dim, has_labels, outputs == Py_None ? NULL : &out, &s);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nnnLO", s.count, s.nbytes, s.nnz, s.dim, s.labelled > 0 ? Py_True : Py_False);
done:
    while (held > 0)
        PyBuffer_Release(&views[--held]);
    PyBuffer_Release(&in);
    return result;
}

PyDoc_STRVAR(record_cut_doc,
             "record_cut(buf, end) -> (cut, corrupt)\n\n"
             "The frame-header walk of pipealgos.io.parallel.record_cut, over buf[:end] (buf[0] a\n"
             "frame start): cut is the last offset where a record starts (a whole frame or a split\n"
             "record's first piece) with every frame before it complete, as far as the headers\n"
             "read show (one jump over a run of equal frames: see record_cut_python); corrupt says\n"
             "a header without the RecordIO magic was met.");

/* One header per frame: the Python loop costs ~1 us a frame, more than the sparse kernel
 * takes to decode the record, so cutting a sparse stream for several decoding threads was
 * slower than decoding it on one. */
static PyObject *py_record_cut(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer in;
    Py_ssize_t end;
    if (!PyArg_ParseTuple(args, "y*n:record_cut", &in, &end))
        return NULL;
    if (end < 0 || end > in.len) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "need 0 <= end <= len(buf)");
        return NULL;
    }
    const unsigned char *buf = in.buf;
    Py_ssize_t pos = 0, cut = 0;
    int corrupt = 0, jumped = 0;
    Py_BEGIN_ALLOW_THREADS
    while (end - pos >= 8) {
        uint32_t magic, lrec;
        memcpy(&magic, buf + pos, 4);
        memcpy(&lrec, buf + pos + 4, 4);
        if (magic != MAGIC) {
            corrupt = 1;
            break;
        }
        uint32_t flag = lrec >> 29;
        Py_ssize_t stride = 8 + (Py_ssize_t)(((lrec & LENGTH_MASK) + 3) & ~3u);
        if (flag == 0 || flag == 1) /* whole, or a split record's first piece */
            cut = pos;
        if (end - pos < stride)
            break;
        /* Dense records: guess that frames like this one fill the buffer, and check the
         * last one's header (once per call; record_cut_python says why a wrong guess is safe). */
        Py_ssize_t last = pos + ((end - pos) / stride - 1) * stride;
        if (!jumped && flag == 0 && last > pos) {
            jumped = 1;
            uint32_t last_magic, last_lrec;
            memcpy(&last_magic, buf + last, 4);
            memcpy(&last_lrec, buf + last + 4, 4);
            if (last_magic == MAGIC && last_lrec == lrec) {
                pos = last;
                continue;
            }
        }
        pos += stride;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    return Py_BuildValue("nO", cut, corrupt ? Py_True : Py_False);
}

/* ---- Dense records: runs of frames of one layout (the template of pipealgos/io/protobuf.py) ---- */

/* Whether a float32 (as its bits) is NaN or infinite: all exponent bits set. */
#define NONFINITE_BITS(bits) (((bits) & 0x7F800000u) == 0x7F800000u)

/* `count` values of `size` bytes (4: float32, 8: float64) at src -> float32 at out; returns
 * whether any output value is NaN or infinite (checked after the cast: a float64 beyond
 * float32's range becomes infinite). */
static int gather_values(const uint8_t *src, Py_ssize_t count, int size, float *out)
{
    uint32_t nonfinite = 0;
    if (size == 4) {
        /* Copy and check in one loop over 4-byte words (the compiler vectorises it). */
        for (Py_ssize_t i = 0; i < count; i++) {
            uint32_t bits;
            memcpy(&bits, src + 4 * i, 4);
            memcpy(out + i, &bits, 4);
            nonfinite |= NONFINITE_BITS(bits);
        }
        return nonfinite != 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        double value;
        uint32_t bits;
        memcpy(&value, src + 8 * i, 8);
        out[i] = (float)value;
        memcpy(&bits, out + i, 4);
        nonfinite |= NONFINITE_BITS(bits);
    }
    return nonfinite != 0;
}

/* A run of dense frames at buf[pos]: which words of a frame hold constant bytes and their
 * values, and where the values lie. */
typedef struct {
    Py_ssize_t stride;
    const uint32_t *cols, *mask, *want; /* word index in the frame, mask of constant bytes, value */
    Py_ssize_t ncols;
    Py_ssize_t feature_offset, feature_count;
    int feature_size;
    Py_ssize_t label_offset; /* -1: no label */
    int label_size;
} DenseLayout;

static int frame_matches(const uint8_t *frame, const DenseLayout *t)
{
    for (Py_ssize_t c = 0; c < t->ncols; c++) {
        uint32_t word;
        memcpy(&word, frame + 4 * (Py_ssize_t)t->cols[c], 4);
        if ((word & t->mask[c]) != t->want[c])
            return 0;
    }
    return 1;
}

/* One pass: each of at most `rows` frames is checked against the layout and its values are
 * copied into the outputs; the run ends before the first frame that differs. Returns the
 * frames taken and the first row (of those) with a non-finite feature / label, or -1. */
static Py_ssize_t dense_gather(const uint8_t *frames, Py_ssize_t rows, const DenseLayout *t, float *features,
                               float *labels, Py_ssize_t *bad_feature_row, Py_ssize_t *bad_label_row)
{
    Py_ssize_t row = 0;
    *bad_feature_row = *bad_label_row = -1;
    for (; row < rows; row++) {
        const uint8_t *frame = frames + row * t->stride;
        if (!frame_matches(frame, t))
            break;
        if (gather_values(frame + t->feature_offset, t->feature_count, t->feature_size,
                          features + row * t->feature_count) && *bad_feature_row < 0)
            *bad_feature_row = row;
        if (labels != NULL && gather_values(frame + t->label_offset, 1, t->label_size, labels + row)
            && *bad_label_row < 0)
            *bad_label_row = row;
    }
    return row;
}

/* A read-only buffer of uint32 items (the layout's word arrays). */
static int word_buffer(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0)
        return 0;
    if (view->itemsize != 4) {
        PyErr_Format(PyExc_ValueError, "%s: uint32 items expected", name);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(dense_gather_doc,
             "dense_gather(buf, pos, stride, cols, mask, want, feature_offset, feature_size,\n"
             "             label_offset, label_size, features, labels) -> (rows, bad_feature_row, bad_label_row)\n\n"
             "The dense template's run in one pass over buf[pos:]: frames of `stride` bytes are taken while\n"
             "their words `cols` (uint32 indices into the frame) masked with `mask` equal `want`; the\n"
             "values of each (float32 or float64 by feature_size 4 or 8, at feature_offset in the frame)\n"
             "are written as float32 into row i of `features` (2-D float32, C order: its shape sets the\n"
             "most frames taken and the values per frame), the label (label_offset, -1 for none) into\n"
             "`labels` (float32 or None). bad_*_row: the first row taken whose values are NaN or\n"
             "infinite after the cast to float32, else -1.");

static PyObject *py_dense_gather(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer in, words[3], out_features, out_labels;
    Py_ssize_t pos;
    DenseLayout t;
    PyObject *word_objs[3], *features_obj, *labels_obj;
    if (!PyArg_ParseTuple(args, "y*nnOOOniniOO:dense_gather", &in, &pos, &t.stride, &word_objs[0], &word_objs[1],
                          &word_objs[2], &t.feature_offset, &t.feature_size, &t.label_offset, &t.label_size,
                          &features_obj, &labels_obj))
        return NULL;
    static const char *word_names[3] = {"cols", "mask", "want"};
    PyObject *result = NULL;
    int held_words = 0, held_features = 0, held_labels = 0;
    for (; held_words < 3; held_words++)
        if (!word_buffer(word_objs[held_words], &words[held_words], word_names[held_words]))
            goto done;
    if (!output_buffer(features_obj, &out_features, 4, "features"))
        goto done;
    held_features = 1;
    if (labels_obj != Py_None) {
        if (!output_buffer(labels_obj, &out_labels, 4, "labels"))
            goto done;
        held_labels = 1;
    }
    t.cols = words[0].buf, t.mask = words[1].buf, t.want = words[2].buf;
    t.ncols = words[0].len / 4;
    if (out_features.ndim != 2 || t.stride <= 0 || t.stride % 4 || pos < 0 || pos > in.len
        || words[1].len / 4 != t.ncols || words[2].len / 4 != t.ncols
        || (t.feature_size != 4 && t.feature_size != 8) || (held_labels && t.label_size != 4 && t.label_size != 8)
        || held_labels != (t.label_offset >= 0)) {
        PyErr_SetString(PyExc_ValueError, "dense_gather: inconsistent arguments (see its docstring)");
        goto done;
    }
    Py_ssize_t rows = out_features.shape[0];
    t.feature_count = out_features.shape[1];
    if ((in.len - pos) / t.stride < rows)
        rows = (in.len - pos) / t.stride;
    if (held_labels && out_labels.len / 4 < rows)
        rows = out_labels.len / 4;
    /* Everything read must lie inside a frame: the checked words and the values. */
    int inside = t.feature_offset >= 0 && t.feature_offset + t.feature_count * t.feature_size <= t.stride
                 && (!held_labels || t.label_offset + t.label_size <= t.stride);
    for (Py_ssize_t c = 0; c < t.ncols; c++)
        inside &= 4 * (Py_ssize_t)t.cols[c] + 4 <= t.stride;
    if (!inside) {
        PyErr_SetString(PyExc_ValueError, "dense_gather: a word or value lies outside the frame");
        goto done;
    }
    Py_ssize_t taken, bad_feature_row, bad_label_row;
    Py_BEGIN_ALLOW_THREADS
    taken = dense_gather((const uint8_t *)in.buf + pos, rows, &t, out_features.buf,
                         held_labels ? out_labels.buf : NULL, &bad_feature_row, &bad_label_row);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nnn", taken, bad_feature_row, bad_label_row);
done:
    if (held_labels)
        PyBuffer_Release(&out_labels);
    if (held_features)
        PyBuffer_Release(&out_features);
    while (held_words > 0)
        PyBuffer_Release(&words[--held_words]);
    PyBuffer_Release(&in);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", py_walk, METH_VARARGS, walk_doc},
    {"record_cut", py_record_cut, METH_VARARGS, record_cut_doc},
    {"dense_gather", py_dense_gather, METH_VARARGS, dense_gather_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipealgos.io._sparse_kernel",
    .m_doc = "Compiled decoder of runs of sparse RecordIO-protobuf records (see pipealgos.io.sparse_run), "
              "and the frame walk of pipealgos.io.parallel.record_cut.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__sparse_kernel(void)
{
    return PyModule_Create(&module);
}
