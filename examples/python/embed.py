"""Runs a model compiled by bertc into a shared library, from Python through ctypes.

    bertc compile ../bert-micro-random -o build/encoder --emit sharedlib --output mean
    echo "2 73 1043 3" | python3 embed.py build/libencoder.so encoder

Reads one sequence of token ids per line of standard input and prints one line per sequence
with the model's output values.
"""
import ctypes
import sys


def load(path, name):
    lib = ctypes.CDLL(path)
    f = lambda s: getattr(lib, f"{name}_{s}")
    create, run, output_len, destroy, error_string = (
        f("create"), f("run"), f("output_len"), f("destroy"), f("error_string"))
    create.restype = ctypes.c_void_p
    create.argtypes = [ctypes.c_int32]
    i32p = ctypes.POINTER(ctypes.c_int32)
    run.restype = ctypes.c_int32
    run.argtypes = [ctypes.c_void_p, i32p, i32p, i32p, ctypes.c_int32, ctypes.c_int32,
                    ctypes.POINTER(ctypes.c_float), ctypes.c_size_t]
    output_len.restype = ctypes.c_size_t
    output_len.argtypes = [ctypes.c_int32, ctypes.c_int32]
    destroy.argtypes = [ctypes.c_void_p]
    error_string.restype = ctypes.c_char_p
    error_string.argtypes = [ctypes.c_int32]
    return create, run, output_len, destroy, error_string


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: embed.py LIBRARY NAME < ids.txt")
    create, run, output_len, destroy, error_string = load(sys.argv[1], sys.argv[2])
    model = create(1)
    if not model:
        sys.exit("error: the model could not be created (CPU features or memory)")
    for line in sys.stdin:
        ids = [int(t) for t in line.split()]
        seq = len(ids)
        ids_arr = (ctypes.c_int32 * seq)(*ids)
        n = output_len(1, seq)
        out = (ctypes.c_float * n)()
        rc = run(model, ids_arr, None, None, 1, seq, out, n)
        if rc != 0:
            sys.exit("error: " + error_string(rc).decode())
        print(" ".join(repr(v) for v in out))
    destroy(model)


if __name__ == "__main__":
    main()
