/* Embeds sentences with a model compiled by bertc into a static library:
 *   bertc compile ../bert-micro-random -o build/encoder --emit staticlib --output mean
 *   cc -O2 -o build/embed main.c -Ibuild build/libencoder.a
 *   ./build/embed 2 73 1043 3        (token ids of one sentence)
 * prints the sentence's mean-pooled embedding, one value per line. */
#include <stdio.h>
#include <stdlib.h>
#include "encoder.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKEN_ID...\n", argv[0]);
        return 2;
    }
    int32_t seq = argc - 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)seq);
    for (int32_t i = 0; i < seq; i++) ids[i] = (int32_t)strtol(argv[i + 1], NULL, 10);
    encoder_model *m = encoder_create(1);
    if (!m) {
        fprintf(stderr, "this CPU lacks %s\n", encoder_cpu_features());
        return 1;
    }
    size_t n = encoder_output_len(1, seq);
    float *out = malloc(sizeof(float) * n);
    int32_t rc = encoder_run(m, ids, NULL, NULL, 1, seq, out, n);
    if (rc != ENCODER_OK) {
        fprintf(stderr, "error: %s\n", encoder_error_string(rc));
        return 1;
    }
    for (size_t i = 0; i < n; i++) printf("%.9g\n", out[i]);
    encoder_destroy(m);
    free(out);
    free(ids);
    return 0;
}
