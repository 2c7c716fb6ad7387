/* ---- SentencePiece-style pipelines: Precompiled, Strip, Replace, Metaspace, Unigram -------- */

/* The normalized text moves from x->text to x->spm and back: the steps write x->spm, then
   swap. */
static void spm_swap(Ctx *x) {
    Bytes t = x->text;
    x->text = x->spm;
    x->spm = t;
}

#if TK_PRECOMPILED
/* SentencePiece's charsmap: the offset in TK_PC_NORM of the replacement of the shortest key
   that is a prefix of s[0..n] (its double-array trie's common_prefix_search, first result),
   or -1. */
static long pc_lookup(const unsigned char *s, size_t n) {
#define PC_OFFSET(u) ((size_t)((u) >> 10) << (((u) & (1u << 9)) >> 6))
    size_t pos = PC_OFFSET(TK_PC_TRIE[0]);
    for (size_t i = 0; i < n && s[i]; i++) {
        pos ^= s[i];
        if (pos >= TK_PC_TRIE_N) return -1;
        uint32_t u = TK_PC_TRIE[pos];
        if ((u & 0x800000FFu) != s[i]) return -1;
        pos ^= PC_OFFSET(u);
        if (pos >= TK_PC_TRIE_N) return -1;
        if ((u >> 8) & 1) return (long)(TK_PC_TRIE[pos] & 0x7FFFFFFFu);
    }
    return -1;
#undef PC_OFFSET
}

static void pc_put(Bytes *b, long at) {
    for (const unsigned char *p = TK_PC_NORM + at; *p; p++) put_byte(b, *p);
}

/* Grapheme cluster breaking (UAX #29) as unicode-segmentation does it, but for GB9c (Indic
   conjuncts, whose clusters are 6 bytes or more and so take the per-character path anyway),
   with its state: in an Extended_Pictographic Extend* run, after its ZWJ, the regional
   indicators so far. */
typedef struct { int pict, zwj, ri; } GState;

static int g_break(GState *g, uint32_t p, uint32_t kp, uint32_t c, uint32_t kc) {
    int zwj = g->zwj, ri = g->ri;
    g->zwj = c == 0x200D && g->pict;
    g->pict = (kc & C_G_EXTPICT) ? 1 : (kc & C_G_JOIN) && c != 0x200D ? g->pict : 0;
    g->ri = (kc & C_G_RI) ? ri + 1 : 0;
    if (p == '\r' && c == '\n') return 0;
    if ((kp | kc) & C_G_CONTROL) return 1;
    if ((kp & C_G_L) && (kc & C_G_AFTER_L)) return 0;
    if ((kp & C_G_VLV) && (kc & C_G_AFTER_V)) return 0;
    if ((kp & C_G_LVTT) && (kc & C_G_AFTER_T)) return 0;
    if (kc & C_G_JOIN) return 0;
    if (kp & C_G_PREPEND) return 0;
    if (zwj && (kc & C_G_EXTPICT)) return 0;
    if ((kp & C_G_RI) && (kc & C_G_RI) && (ri & 1)) return 0;
    return 1;
}

/* One cluster s[a..b] of the Precompiled step: under 6 bytes replaced whole when a key
   prefixes it, else each character replaced by its own key's replacement or kept (as
   `tokenizers` does). */
static void pc_cluster(Ctx *x, const unsigned char *s, size_t a, size_t b) {
    if (b - a < 6) {
        long at = pc_lookup(s + a, b - a);
        if (at >= 0) { pc_put(&x->spm, at); return; }
    }
    for (size_t j = a, len; j < b; j += len) {
        (void)cp_at(s, j, &len);
        long at = pc_lookup(s + j, len);
        if (at >= 0) pc_put(&x->spm, at);
        else put_bytes(&x->spm, s + j, len);
    }
}

/* The Precompiled step over the text, cluster by cluster. */
static void spm_precompiled(Ctx *x) {
    const unsigned char *s = x->text.v;
    size_t n = x->text.n, start = 0, len;
    GState g = {0, 0, 0};
    uint32_t p = 0, kp = C_G_CONTROL;
    x->spm.n = 0;
    for (size_t i = 0; i < n; i += len) {
        uint32_t c = cp_at(s, i, &len), kc = cls(c);
        if (g_break(&g, p, kp, c, kc) && i > start) {
            pc_cluster(x, s, start, i);
            start = i;
        }
        p = c, kp = kc;
    }
    if (n > start) pc_cluster(x, s, start, n);
    spm_swap(x);
}
#endif

/* The Strip step: whitespace removed from the start and/or the end. */
static void spm_strip(Ctx *x, int left, int right) {
    const unsigned char *s = x->text.v;
    size_t a = 0, b = x->text.n, len;
    while (left && a < b && (cls(cp_at(s, a, &len)) & C_SPACE)) a += len;
    while (right && b > a) {
        size_t c = b - 1;
        while (c > a && (s[c] & 0xC0) == 0x80) c--;
        if (!(cls(cp_at(s, c, &len)) & C_SPACE)) break;
        b = c;
    }
    x->spm.n = 0;
    put_bytes(&x->spm, s + a, b - a);
    spm_swap(x);
}

/* The Replace step: each leftmost match of `min` or more `unit`s in a row (`literal`: `unit`
   once) becomes `content`. */
static void spm_replace(Ctx *x, const char *unit, size_t un, size_t min, int literal,
                        const char *content, size_t cn) {
    const unsigned char *s = x->text.v;
    size_t n = x->text.n, i = 0;
    x->spm.n = 0;
    while (i < n) {
        size_t run = 0, j = i;
        while (j + un <= n && !memcmp(s + j, unit, un)) {
            run++;
            j += un;
            if (literal) break;
        }
        if (run >= min && run) {
            put_bytes(&x->spm, (const unsigned char *)content, cn);
            i = j;
        } else {
            size_t len;
            (void)cp_at(s, i, &len);
            put_bytes(&x->spm, s + i, len);
            i += len;
        }
    }
    spm_swap(x);
}

/* ---- Unigram --------------------------------------------------------------------------- */

/* The most probable segmentation of one word into pieces (Viterbi over byte positions, the
   pieces that start at each character in order of length, a later candidate winning only
   with a higher score; a character no piece covers alone is the unknown token at the lowest
   score minus 10), then runs of unknown tokens fused (the fused text's id if it is a piece). */
static void unigram(Ctx *x, const unsigned char *s, size_t n) {
    if (!n) return;
    x->u_score.n = x->u_start.n = x->u_id.n = 0;
    for (size_t i = 0; i <= n; i++) {
        PUSH(&x->u_score, 0.0);
        put(&x->u_start, UINT32_MAX);
        put(&x->u_id, 0);
    }
    if (x->u_score.oom || x->u_start.oom || x->u_id.oom) return;
    double *score = x->u_score.v;
    uint32_t *start = x->u_start.v, *id = x->u_id.v;
    for (size_t at = 0; at < n;) {
        double here = score[at];
        size_t mblen;
        (void)cp_at(s, at, &mblen);
        int single = 0;
        uint32_t h = 2166136261u;
        for (size_t len = 1; len <= TK_VOCAB_MAX_LEN && at + len <= n; len++) {
            h = (h ^ s[at + len - 1]) * 16777619u;
            if (at + len < n && (s[at + len] & 0xC0) == 0x80) continue;
            long t = vocab_probe(h, NULL, 0, s + at, len);
            if (t < 0) continue;
            double cand = TK_UNI_SCORE[t] + here;
            size_t end = at + len;
            if (start[end] == UINT32_MAX || cand > score[end]) {
                score[end] = cand;
                start[end] = (uint32_t)at;
                id[end] = (uint32_t)t;
            }
            if (len == mblen) single = 1;
        }
        if (!single) {
            size_t end = at + mblen;
            double cand = TK_UNI_UNK_SCORE + here;
            if (start[end] == UINT32_MAX || cand > score[end]) {
                score[end] = cand;
                start[end] = (uint32_t)at;
                id[end] = TK_UNI_UNK;
            }
        }
        at += mblen;
    }
    /* back from the end: the tokens in reverse, runs of unknowns fused */
    size_t first = x->out.n;
    for (size_t end = n; end > 0;) {
        size_t b = start[end];
        if (id[end] == TK_UNI_UNK) {
            size_t e = end;
            while (b > 0 && id[b] == TK_UNI_UNK) b = start[b];
            uint32_t h = 2166136261u;
            for (size_t k = b; k < e; k++) h = (h ^ s[k]) * 16777619u;
            long t = e - b <= TK_VOCAB_MAX_LEN ? vocab_probe(h, NULL, 0, s + b, e - b) : -1;
            put(&x->out, t >= 0 ? (uint32_t)t : TK_UNI_UNK);
        } else {
            put(&x->out, id[end]);
        }
        end = b;
    }
    if (x->out.oom) return;
    for (size_t a = first, b = x->out.n; a + 1 < b; a++, b--) {
        uint32_t t = x->out.v[a];
        x->out.v[a] = x->out.v[b - 1];
        x->out.v[b - 1] = t;
    }
}

/* ---- Metaspace --------------------------------------------------------------------------- */

static const unsigned char MS_REPL[] = TK_MS_REPL;

/* One word: spaces become the replacement, which is prepended (by the scheme; `first`: the
   word starts the text), then each replacement starts a piece (with `split`). */
static void ms_word(Ctx *x, const unsigned char *s, size_t n, int first) {
    size_t rn = sizeof MS_REPL - 1;
    x->ms.n = 0;
    /* (spaces are replaced first: a word starting with one starts with the replacement) */
    int starts = (n && s[0] == ' ') || (n >= rn && !memcmp(s, MS_REPL, rn));
    if (!starts && (TK_MS_PREPEND == 1 || (TK_MS_PREPEND == 2 && first))) put_bytes(&x->ms, MS_REPL, rn);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') put_bytes(&x->ms, MS_REPL, rn);
        else put_byte(&x->ms, s[i]);
    }
    if (x->ms.oom) return;
    const unsigned char *m = x->ms.v;
    size_t mn = x->ms.n;
#if TK_MS_SPLIT
    size_t piece = 0;
    for (size_t i = 0; i + rn <= mn;) {
        if (!memcmp(m + i, MS_REPL, rn)) {
            if (i > piece) unigram(x, m + piece, i - piece);
            piece = i;
            i += rn;
        } else {
            i++;
        }
    }
    unigram(x, m + piece, mn - piece);
#else
    unigram(x, m, mn);
#endif
}

/* A piece of normalized text: split on whitespace first (WhitespaceSplit) or not. */
static void ms_words(Ctx *x, const unsigned char *s, size_t n) {
    int first = s == x->base;
#if TK_WS_SPLIT
    size_t word = 0, i = 0;
    while (i < n) {
        size_t len;
        if (cls(cp_at(s, i, &len)) & C_SPACE) {
            if (i > word) ms_word(x, s + word, i - word, first && word == 0);
            word = i + len;
        }
        i += len;
    }
    if (n > word) ms_word(x, s + word, n - word, first && word == 0);
#else
    ms_word(x, s, n, first);
#endif
}
