/* Compiled random cut forest score (see forest.py: the definition and the numpy version).
 *
 * Tree by tree (so that the tree's boxes stay in cache while every point walks it), each
 * point falls to its leaf by the cuts, takes the leaf's score, then goes up the parents: at
 * each node the L1 distance g from the point to the node's box; it stops when g == 0 (inside
 * this box, so inside every box above) or past the root; else, with p = g / (box extents + g),
 * score = p / (depth + 1) + (1 - p) * score. The tree's score times log2(N + 1) is added to
 * the point's total. The same arithmetic as the numpy version, in the same order, so both
 * give the same scores. Optional: without a C compiler forest.py uses its numpy version.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

typedef struct {
    const float *x;              /* (points, dim) */
    double *total;               /* (points,) out: Σ over trees of the normalised tree scores */
    const int32_t *tree_root;    /* (trees,) */
    const int32_t *cut_dimension, *left_child, *right_child, *mass, *parent, *depth; /* (nodes,) */
    const float *cut_value;      /* (nodes,) */
    const float *boxes;          /* (nodes, 2, dim): min then max */
    const double *extent;        /* (nodes,) summed extents of each box */
    Py_ssize_t points, dim, trees, nodes;
} Forest;

static inline float distance(float x, float low, float high)
{
    float below = low - x, above = x - high;
    float outside = below > above ? below : above;
    return outside > 0.0f ? outside : 0.0f;
}

/* L1 distance from x to the box, summed in float32 as numpy sums a row (8 strided partial
 * sums, then the tail), so both implementations round alike (exactly so up to 128
 * features). The independent partial sums also let the compiler vectorise the loop. */
static float box_distance(const float *x, const float *low, const float *high, Py_ssize_t dim)
{
    Py_ssize_t d = 0;
    float total;
    if (dim < 8) {
        total = 0.0f;
    } else {
        float r[8];
        for (int k = 0; k < 8; k++)
            r[k] = distance(x[k], low[k], high[k]);
        for (d = 8; d < dim - dim % 8; d += 8)
            for (int k = 0; k < 8; k++)
                r[k] += distance(x[d + k], low[d + k], high[d + k]);
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    }
    for (; d < dim; d++)
        total += distance(x[d], low[d], high[d]);
    return total;
}

/* One tree's score of x (before the log2(N + 1) factor); -1 when an index is out of range
 * (a damaged forest). */
static double tree_score(const Forest *f, const float *x, int32_t node, double tree_mass)
{
    for (Py_ssize_t steps = 0; f->cut_dimension[node] >= 0; steps++) {
        int32_t dim = f->cut_dimension[node];
        if (dim >= f->dim || steps > f->nodes)
            return -1.0;
        node = x[dim] <= f->cut_value[node] ? f->left_child[node] : f->right_child[node];
        if (node < 0 || node >= f->nodes)
            return -1.0;
    }
    const float *leaf_point = f->boxes + (Py_ssize_t)node * 2 * f->dim;
    Py_ssize_t d = 0;
    while (d < f->dim && leaf_point[d] == x[d])
        d++;
    double depth = f->depth[node], leaf_mass = f->mass[node];
    if (d == f->dim) /* x is the leaf's point: the walk stops there */
        return (1.0 - leaf_mass / (2.0 * tree_mass)) / (depth + log2(leaf_mass + 1.0));
    double score = 1.0 / (depth + 1.0);
    for (node = f->parent[node]; node >= 0; node = f->parent[node]) {
        const float *low = f->boxes + (Py_ssize_t)node * 2 * f->dim;
        double growth = box_distance(x, low, low + f->dim, f->dim);
        if (growth <= 0.0) /* inside this box, so inside every box above */
            break;
        double p = growth / (f->extent[node] + growth);
        score = p / (f->depth[node] + 1.0) + (1.0 - p) * score;
    }
    return score;
}

/* Σ over trees, tree by tree (its boxes stay in cache while every point walks it). */
static int forest_scores(const Forest *f)
{
    for (Py_ssize_t i = 0; i < f->points; i++)
        f->total[i] = 0.0;
    for (Py_ssize_t t = 0; t < f->trees; t++) {
        int32_t root = f->tree_root[t];
        if (root < 0 || root >= f->nodes)
            return -1;
        double tree_mass = f->mass[root], normaliser = log2(tree_mass + 1.0);
        for (Py_ssize_t i = 0; i < f->points; i++) {
            double score = tree_score(f, f->x + i * f->dim, root, tree_mass);
            if (score < 0.0)
                return -1;
            f->total[i] += score * normaliser;
        }
    }
    return 0;
}

/* A C-contiguous buffer of items of `itemsize` bytes; its item count in *count. */
static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *name,
                      Py_ssize_t *count)
{
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return 0;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: items of %zd bytes expected", name, itemsize);
        PyBuffer_Release(view);
        return 0;
    }
    *count = view->len / itemsize;
    return 1;
}

PyDoc_STRVAR(score_doc,
             "score(x, total, tree_root, cut_dimension, cut_value, left_child, right_child, mass,\n"
             "      boxes, parent, extent, depth)\n\n"
             "Fill total (float64, (points,)) with each row's sum over trees of the RCF library's\n"
             "normalised tree score. x float32 (points, dim); boxes float32 (nodes, 2, dim); extent\n"
             "float64; cut_value float32; the other arrays int32 (see forest.py).");

static PyObject *py_score(PyObject *Py_UNUSED(self), PyObject *args)
{
    enum { N = 12 };
    PyObject *objects[N];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOO:score", &objects[0], &objects[1], &objects[2], &objects[3],
                          &objects[4], &objects[5], &objects[6], &objects[7], &objects[8], &objects[9],
                          &objects[10], &objects[11]))
        return NULL;
    static const Py_ssize_t itemsizes[N] = {4, 8, 4, 4, 4, 4, 4, 4, 4, 4, 8, 4};
    static const char *names[N] = {"x", "total", "tree_root", "cut_dimension", "cut_value", "left_child",
                                   "right_child", "mass", "boxes", "parent", "extent", "depth"};
    Py_buffer views[N];
    Py_ssize_t counts[N];
    int held = 0;
    PyObject *result = NULL;
    for (; held < N; held++)
        if (!get_buffer(objects[held], &views[held], itemsizes[held], held == 1, names[held], &counts[held]))
            goto done;
    Py_ssize_t nodes = counts[3], dim = views[0].ndim == 2 ? views[0].shape[1] : -1;
    int agree = dim > 0 && counts[1] == views[0].shape[0] && counts[8] == nodes * 2 * dim;
    for (int k = 4; k < N; k++)
        if (k != 8)
            agree = agree && counts[k] == nodes;
    if (!agree) {
        PyErr_SetString(PyExc_ValueError, "score: array shapes do not agree");
        goto done;
    }
    Forest f = {views[0].buf, views[1].buf, views[2].buf, views[3].buf, views[5].buf, views[6].buf,
                views[7].buf, views[9].buf, views[11].buf, views[4].buf, views[8].buf, views[10].buf,
                views[0].shape[0], dim, counts[2], nodes};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = forest_scores(&f);
    Py_END_ALLOW_THREADS
    if (status < 0) {
        PyErr_SetString(PyExc_ValueError, "score: the forest's arrays hold an index out of range");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    while (held > 0)
        PyBuffer_Release(&views[--held]);
    return result;
}

static PyMethodDef methods[] = {
    {"score", py_score, METH_VARARGS, score_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipealgos.algorithms.random_cut_forest._score_kernel",
    .m_doc = "Compiled random cut forest score (see forest.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__score_kernel(void)
{
    return PyModule_Create(&module);
}
