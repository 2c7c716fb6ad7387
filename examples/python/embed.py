"""Runs a model compiled by bertc into a shared library, from Python through ctypes: the
artifact's own tokenizer (compiled in from the model's tokenizer.json) and model.

    bertc compile ../bert-micro-random -o build/encoder --emit sharedlib --output mean
    echo "A sentence." | python3 embed.py build/libencoder.so encoder

Reads one text a line of standard input (two texts separated by a tab for a pair) and prints
one line of output values per text. With --ids, reads space-separated token ids instead.
"""
import ctypes
import sys


class Model:
    def __init__(self, path, name):
        lib = ctypes.CDLL(path)
        f = lambda s: getattr(lib, f"{name}_{s}")
        i32, i32p = ctypes.c_int32, ctypes.POINTER(ctypes.c_int32)
        fp, charpp = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_char_p)
        self.create, self.run, self.output_len = f("create"), f("run"), f("output_len")
        self.destroy, self.error_string, self.max_seq = f("destroy"), f("error_string"), f("max_seq")
        self.create.restype = ctypes.c_void_p
        self.create.argtypes = [i32]
        self.run.restype = i32
        self.run.argtypes = [ctypes.c_void_p, i32p, i32p, i32p, i32, i32, fp, ctypes.c_size_t]
        self.output_len.restype = ctypes.c_size_t
        self.output_len.argtypes = [i32, i32]
        self.destroy.argtypes = [ctypes.c_void_p]
        self.error_string.restype = ctypes.c_char_p
        self.error_string.argtypes = [i32]
        self.max_seq.restype = i32
        self.run_text = getattr(lib, f"{name}_run_text", None)
        if self.run_text is not None:
            self.run_text.restype = i32
            self.run_text.argtypes = [ctypes.c_void_p, charpp, charpp, i32, i32, fp,
                                      ctypes.c_size_t, i32p]
        self.handle = self.create(1)
        if not self.handle:
            sys.exit("error: the model could not be created (CPU features or memory)")

    def check(self, rc):
        if rc != 0:
            sys.exit("error: " + self.error_string(rc).decode())

    def embed_text(self, text, pair=None):
        """The output for one text (or pair), as a list of floats."""
        if self.run_text is None:
            sys.exit("error: the library was compiled without a tokenizer: use --ids")
        seq = self.max_seq()
        n = self.output_len(1, seq)
        out = (ctypes.c_float * n)()
        texts = (ctypes.c_char_p * 1)(text.encode())
        pairs = (ctypes.c_char_p * 1)(pair.encode()) if pair is not None else None
        tokens = (ctypes.c_int32 * 1)()
        self.check(self.run_text(self.handle, texts, pairs, 1, 1, out, n, tokens))
        return list(out)

    def embed_ids(self, ids):
        seq = len(ids)
        n = self.output_len(1, seq)
        out = (ctypes.c_float * n)()
        self.check(self.run(self.handle, (ctypes.c_int32 * seq)(*ids), None, None, 1, seq, out, n))
        return list(out)


def main():
    args = [a for a in sys.argv[1:] if a != "--ids"]
    if len(args) != 2:
        sys.exit("usage: embed.py LIBRARY NAME [--ids] < texts.txt")
    model = Model(args[0], args[1])
    for line in sys.stdin:
        line = line.rstrip("\n")
        if "--ids" in sys.argv:
            out = model.embed_ids([int(t) for t in line.split()])
        else:
            a, _, b = line.partition("\t")
            out = model.embed_text(a, b if "\t" in line else None)
        print(" ".join(repr(v) for v in out))
    model.destroy(model.handle)


if __name__ == "__main__":
    main()
