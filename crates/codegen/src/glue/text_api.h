/* The model's tokenizer (@KIND@, from @TOKENIZER@), compiled in: the token ids are those the
   Hugging Face `tokenizers` library gives with that file, special tokens included. Texts are
   UTF-8 of at most @UP@_MAX_TEXT_BYTES bytes. */
#define @UP@_HAS_TOKENIZER 1
#define @UP@_MAX_TEXT_BYTES @MAX_TEXT_BYTES@

/* Tokenizes one text (text[0..len]) or, when pair is not NULL, a pair of texts (a
   cross-encoder's query and passage) into ids and type_ids (type_ids may be NULL), each with
   room for @UP@_MAX_SEQ tokens; *n receives the count. Longer inputs are truncated to
   @UP@_MAX_SEQ tokens (a pair longest first) when truncate is 1; with truncate 0 they return
   @UP@_E_SEQ. Returns @UP@_OK, @UP@_E_UTF8, @UP@_E_TEXT, @UP@_E_SEQ, @UP@_E_NULL or
   @UP@_E_NOMEM. Any thread may call it, without a model handle. */
int32_t @N@_tokenize(const char *text, size_t len, const char *pair, size_t pair_len,
                     int32_t truncate, int32_t *ids, int32_t *type_ids, int32_t *n);

/* Runs a batch of NUL-terminated UTF-8 texts (and, when pairs is not NULL, the second text of
   each pair): tokenizes them as @N@_tokenize does and runs them as @N@_run does with seq =
   @UP@_MAX_SEQ (padding costs nothing), so out needs @N@_output_len(batch, @UP@_MAX_SEQ)
   floats (per-token outputs: @UP@_MAX_SEQ rows a text, rows past its tokens zero). lengths,
   when not NULL, receives each text's token count. Returns @UP@_OK or an error code. */
int32_t @N@_run_text(@N@_model *m, const char *const *texts, const char *const *pairs,
                     int32_t batch, int32_t truncate, float *out, size_t out_len,
                     int32_t *lengths);

