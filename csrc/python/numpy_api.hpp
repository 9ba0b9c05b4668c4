// numpy_api.hpp — the numpy C API for every file of the extension: one import (module.cpp imports it,
// the other files see the same table), for the per-record paths that must not go through Python.
// Built against numpy 2, which also runs on numpy 1.x.
#pragma once

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL RINGKERNEL_NUMPY_API
#ifndef RINGKERNEL_IMPORTS_NUMPY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>
#include <numpy/arrayscalars.h>
