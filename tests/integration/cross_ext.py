"""A tiny ``torch._C`` cross-compiled in the toolchain image, linking the sysroot's OpenBLAS.

It has what makes a real torch wheel hard to ship: a CPython 3.13 extension for the target, a
dependency (libopenblas.so.0, and through it libgfortran) that no manylinux policy provides, and
code that proves at run time which OpenBLAS it loaded.
"""

from __future__ import annotations

from pathlib import Path

from rvtorch.targets import Target, matrix
from rvtorch.wheel import expected_soabi, wheel_arch_suffix
from tests.wheelkit import make_wheel

EXTENSION_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <cblas.h>

extern char *openblas_get_corename(void);

static PyObject *dot(PyObject *self, PyObject *args) {
    float x[3] = {1, 2, 3}, y[3] = {4, 5, 6};
    return PyFloat_FromDouble(cblas_sdot(3, x, 1, y, 1));
}

static PyObject *blas_core(PyObject *self, PyObject *args) {
    return PyUnicode_FromString(openblas_get_corename());
}

static PyMethodDef methods[] = {
    {"dot", dot, METH_NOARGS, "1*4 + 2*5 + 3*6 through cblas_sdot"},
    {"blas_core", blas_core, METH_NOARGS, "the OpenBLAS kernel chosen at run time"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "torch._C", NULL, -1, methods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
"""


def build_crossenv_wheel(t: Target, work: Path) -> Path:
    """Compile ``_C`` in the toolchain image and wheel it as a crossenv would (linux_<arch>)."""
    from rvtorch.engine import detect_engine
    from rvtorch.image import ensure_image

    gcc = matrix().project.gcc
    py = matrix().project.python
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "ext.c").write_text(EXTENSION_C)
    so = f"_C.{expected_soabi(t)}.so"
    engine = detect_engine()
    with engine.container(ensure_image(t.arch), mounts={src: "/src"}) as ctr:
        ctr.call([f"{t.triple}-gcc-{gcc}", *t.cflags.split(), "-O2", "-fPIC", "-shared",
                  f"-I/usr/include/python{py}", f"-I/usr/include/{t.triple}/python{py}",
                  "/src/ext.c", "-o", f"/src/{so}", "-lopenblas"])
    return make_wheel(work / "wheel", {
        "torch/__init__.py": "from . import _C\n",
        f"torch/{so}": src / so,
    }, version=f"2.6.0+{t.arch}", tag=f"cp313-cp313-linux_{wheel_arch_suffix(t)}")
