/*
 * The three pthread mutex calls the limit zones make on every request, as plain
 * C functions of one argument (the mutex's address, an int).
 *
 * Why C: filters/shared_locks.py reaches the C library through ctypes, and a ctypes
 * call converts its arguments and prepares a libffi call frame every time: about 140 ns
 * a call, six calls a request through limit_req and limit_conn (lock and unlock, three
 * times). These wrappers cost what any builtin call costs, about 20 ns. Optional, as the
 * mypyc build is: scripts/build-accel.sh compiles this file; without it shared_locks.py
 * makes the same calls through ctypes, with the same results.
 *
 * Each returns the C function's return value (0, or an errno value such as EOWNERDEAD)
 * and decides nothing: shared_locks.py does, the same way for both.
 * They keep the GIL, as ctypes.PyDLL calls do: a lock is held for a microsecond.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>

static pthread_mutex_t *mutex_at(PyObject *address)
{
    return (pthread_mutex_t *)PyLong_AsVoidPtr(address);
}

#define MUTEX_CALL(name, call)                                      \
    static PyObject *name(PyObject *module, PyObject *address)      \
    {                                                               \
        pthread_mutex_t *mutex = mutex_at(address);                 \
        if (mutex == NULL) {                                        \
            if (!PyErr_Occurred())                                  \
                PyErr_SetString(PyExc_ValueError, "a null mutex");  \
            return NULL;                                            \
        }                                                           \
        return PyLong_FromLong(call(mutex));                        \
    }

MUTEX_CALL(lock, pthread_mutex_lock)
MUTEX_CALL(unlock, pthread_mutex_unlock)
MUTEX_CALL(consistent, pthread_mutex_consistent)

static PyMethodDef methods[] = {
    {"lock", lock, METH_O, "pthread_mutex_lock(address) -> its return value"},
    {"unlock", unlock, METH_O, "pthread_mutex_unlock(address) -> its return value"},
    {"consistent", consistent, METH_O, "pthread_mutex_consistent(address) -> its return value"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "ferryman.filters._mutex_calls",
    "pthread_mutex_lock, _unlock and _consistent without ctypes (see shared_locks.py).",
    0,
    methods,
};

PyMODINIT_FUNC PyInit__mutex_calls(void)
{
    return PyModule_Create(&module);
}
