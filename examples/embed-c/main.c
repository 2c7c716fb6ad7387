/* Embeds sentences with a model compiled by bertc into a static library, its tokenizer
 * compiled in:
 *   bertc compile ../bert-micro-random -o build/encoder --emit staticlib --output mean
 *   cc -O2 -o build/embed main.c -Ibuild build/libencoder.a
 *   ./build/embed "A sentence." "Another one."
 * prints each sentence's mean-pooled embedding, one line of values per sentence. */
#include <stdio.h>
#include <stdlib.h>
#include "encoder.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TEXT...\n", argv[0]);
        return 2;
    }
    int32_t batch = argc - 1;
    encoder_model *m = encoder_create(1);
    if (!m) {
        fprintf(stderr, "this CPU lacks %s\n", encoder_cpu_features());
        return 1;
    }
    size_t n = encoder_output_len(batch, ENCODER_MAX_SEQ);
    float *out = malloc(sizeof(float) * n);
    if (!out) return 1;
    int32_t rc = encoder_run_text(m, (const char *const *)(argv + 1), NULL, batch, 1, out, n, NULL);
    if (rc != ENCODER_OK) {
        fprintf(stderr, "error: %s\n", encoder_error_string(rc));
        return 1;
    }
    for (int32_t i = 0; i < batch; i++)
        for (int j = 0; j < ENCODER_OUTPUT_WIDTH; j++)
            printf(j + 1 < ENCODER_OUTPUT_WIDTH ? "%.9g " : "%.9g\n", out[i * ENCODER_OUTPUT_WIDTH + j]);
    encoder_destroy(m);
    free(out);
    return 0;
}
