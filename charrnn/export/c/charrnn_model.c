/* @DESCRIPTION@
 *
 * A character-level recurrent language model in one C99 file: its weights are the arrays in
 * this file, and it needs nothing beyond the C library and libm. Everything it uses is
 * static: no memory is allocated at any time.
 *
 * As a program:
 *   cc -std=c99 -O3 -march=native -o model model.c -lm
 *   ./model --prime "ROMEO:" --length 500 --temperature 0.8 --seed 1
 *   ./model --temperature 0        greedy: the most likely character at every step
 *   ./model --top-k 10             draw among the 10 most likely characters only
 *   ./model --info                 shape, vocabulary and static memory footprint
 *   ./model --logits < text.txt    the logits after each character of stdin, one line each
 *   ./model --score < text.txt     nats of every character of stdin after the first
 *   ./model --bench 2000           time 2000 steps at batch 1
 * It writes the prime and then the sample to stdout, raw UTF-8, and ends with a newline.
 * Without --prime it starts as if at the beginning of a line. A temperature below 1e-4 is
 * greedy; above 1e4 every character that top-k keeps is equally likely.
 *
 * As a library, compile this file with -DCHARRNN_NO_MAIN and, in your own code,
 *   #define CHARRNN_HEADER_ONLY
 *   #include "model.c"
 * to get the declarations below (or #include "model.c" with CHARRNN_NO_MAIN alone, in one
 * translation unit). A charrnn_state holds one stream: the recurrent state, the latest logits
 * and the random generator; keep as many as you need, each is independent.
 *
 *   charrnn_state s;
 *   charrnn_init(&s, 42);
 *   charrnn_prime(&s, "ROMEO:");                       feeds the prompt
 *   for (n = 0; n < 100; n++) {
 *       int id = charrnn_sample(&s, 0.8f, 0);          draws from the latest logits
 *       size_t len;
 *       const char *text = charrnn_decode(id, &len);   its UTF-8 bytes
 *       fwrite(text, 1, len, stdout);
 *       charrnn_step(&s, id);                          feeds it back
 *   }
 *
 * Random numbers: xorshift64* (Vigna 2016) seeded through splitmix64, so any seed, 0 included,
 * gives a good stream; a draw is the inverse of the cumulative distribution at one uniform
 * number. The same seed gives the same text from the same build; it is not the text that
 * charrnn's own sampler draws (a different generator), except greedy, which is the same.
 *
 * The equations are PyTorch's: LSTM gates i, f, g, o with c' = f*c + i*g, h' = o*tanh(c');
 * GRU gates r, z, n with n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), h' = (1-z)*n + z*h;
 * plain RNN h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (or relu).
 */
#if !defined(CHARRNN_NO_MAIN) && !defined(CHARRNN_HEADER_ONLY) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 199309L /* clock_gettime for --bench, where the system has it */
#endif

#ifndef CHARRNN_MODEL_H
#define CHARRNN_MODEL_H

#include <stddef.h>

/*@MODEL_DEFINES@*/

typedef struct {
    float h[CHARRNN_LAYERS][CHARRNN_HIDDEN]; /* every layer's output */
#if CHARRNN_CELL_LSTM
    float c[CHARRNN_LAYERS][CHARRNN_HIDDEN]; /* the LSTM's cell states */
#endif
    float logits[CHARRNN_VOCAB];             /* of the character after the last one fed */
    /* scratch space, so that a step touches nothing outside its state */
    float input[CHARRNN_EMBED];
    float gates[CHARRNN_GATES];
#if CHARRNN_CELL_GRU
    float recurrent[CHARRNN_GATES];
#endif
    float sum[CHARRNN_GATES > CHARRNN_VOCAB ? CHARRNN_GATES : CHARRNN_VOCAB];
    float work[CHARRNN_VOCAB];
    unsigned long long rng;
} charrnn_state;

/* Zero the recurrent state and the logits, and seed the random generator. */
void charrnn_init(charrnn_state *s, unsigned long long seed);
/* Feed one id; returns the logits of the next one (also in s->logits), or NULL (and the
   state unchanged) when the id is outside 0 .. CHARRNN_VOCAB-1. */
const float *charrnn_step(charrnn_state *s, int id);
/* Feed every character of a NUL-terminated UTF-8 text. Returns how many were fed, or -1 - k
   when the character at byte k is not in the vocabulary (nothing after it is fed). */
long charrnn_prime(charrnn_state *s, const char *text);
/* Draw the next id from s->logits: temperature 0 is greedy, top_k 0 keeps every id. */
int charrnn_sample(charrnn_state *s, float temperature, int top_k);
/* The id of the character (or byte) at the start of text[0..length), or -1 when the
   vocabulary lacks it or the bytes are not UTF-8; *used receives its length in bytes. */
int charrnn_encode(const char *text, size_t length, size_t *used);
/* The bytes of an id (not NUL-terminated: a byte-level vocabulary has byte 0). */
const char *charrnn_decode(int id, size_t *length);
/* Bytes of the weights and the vocabulary tables: the model's read-only memory. */
size_t charrnn_weight_bytes(void);

#endif /* CHARRNN_MODEL_H */

#ifndef CHARRNN_HEADER_ONLY

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if CHARRNN_WEIGHTS_INT8
typedef signed char charrnn_weight; /* times the row's scale */
#elif CHARRNN_WEIGHTS_FLOAT16
typedef unsigned short charrnn_weight; /* IEEE half-precision bits */
#else
typedef float charrnn_weight;
#endif
#define CHARRNN_EMBED_ROW (CHARRNN_INPUT_TABLE ? CHARRNN_GATES : CHARRNN_EMBED)

/* One matrix of rows x cols weights, stored column after column, and with int8 weights one
   scale per row. */
typedef struct {
    const charrnn_weight *w;
    const float *scale;
} charrnn_matrix;

/* A layer: gates = W_ih x + b_ih + W_hh h + b_hh (the biases apart only for the GRU, whose
   candidate gate scales the recurrent part alone). */
typedef struct {
    charrnn_matrix ih, hh;
    const float *bias;      /* b_ih + b_hh, or for the GRU b_ih */
    const float *bias_hh;   /* the GRU's b_hh; unused otherwise */
    int inputs;
} charrnn_layer;

/*@MODEL_WEIGHTS@*/

#if CHARRNN_WEIGHTS_FLOAT16
static float charrnn_half(unsigned short bits)
{
    /* exponent and mantissa moved to a float's place, then rescaled by 2^(127-15): exact for
       normal and subnormal halves alike (the weights are finite) */
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)(bits & 0x7fffu) << 13;
    v.f *= 0x1p112f;
    v.u |= (uint32_t)(bits & 0x8000u) << 16;
    return v.f;
}
#define CHARRNN_WEIGHT(p) charrnn_half(p)
#else
#define CHARRNN_WEIGHT(p) ((float)(p))
#endif

/* Where the compiler targets x86's AVX (for int8 weights AVX2, for float16 F16C; -march=native
   on any x86 of the last decade), the matrix-vector product loads eight weights at a time as
   floats with the instructions made for it: the same values and the same sums as the portable
   loop below, which the compiler vectorizes less well (and for float16 not at all). */
#if CHARRNN_WEIGHTS_INT8 && defined(__AVX2__)
#define CHARRNN_X86 1
#define CHARRNN_LOAD8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#elif CHARRNN_WEIGHTS_FLOAT16 && defined(__F16C__) && defined(__AVX__)
#define CHARRNN_X86 1
#define CHARRNN_LOAD8(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#elif !CHARRNN_WEIGHTS_INT8 && !CHARRNN_WEIGHTS_FLOAT16 && defined(__AVX__)
#define CHARRNN_X86 1
#define CHARRNN_LOAD8(p) _mm256_loadu_ps(p)
#else
#define CHARRNN_X86 0
#endif
#if CHARRNN_X86
#include <immintrin.h>
#endif

/* y[0..rows) += scale .* (W x), with W stored column after column (cols x rows): the inner
   loop runs down four columns at once, every output apart, so the compiler vectorizes it
   without reordering any sum (no -ffast-math), and no horizontal sums are left to do. `sum`
   holds the products before their scales (int8 weights). */
static void charrnn_matvec_add(float *restrict y, float *restrict sum, charrnn_matrix m,
                               const float *restrict x, int rows, int cols)
{
    const charrnn_weight *restrict w = m.w;
    float *restrict out = m.scale ? sum : y;
    int i, j;
    if (m.scale)
        for (i = 0; i < rows; i++) sum[i] = 0.0f;
    for (j = 0; j + 4 <= cols; j += 4) {
        const charrnn_weight *restrict c0 = w + (size_t)j * (size_t)rows;
        const charrnn_weight *restrict c1 = c0 + rows, *restrict c2 = c1 + rows, *restrict c3 = c2 + rows;
        const float x0 = x[j], x1 = x[j + 1], x2 = x[j + 2], x3 = x[j + 3];
        i = 0;
#if CHARRNN_X86
        {
            const __m256 v0 = _mm256_set1_ps(x0), v1 = _mm256_set1_ps(x1);
            const __m256 v2 = _mm256_set1_ps(x2), v3 = _mm256_set1_ps(x3);
            for (; i + 8 <= rows; i += 8) {
                __m256 a = _mm256_add_ps(_mm256_mul_ps(CHARRNN_LOAD8(c0 + i), v0), _mm256_mul_ps(CHARRNN_LOAD8(c1 + i), v1));
                __m256 b = _mm256_add_ps(_mm256_mul_ps(CHARRNN_LOAD8(c2 + i), v2), _mm256_mul_ps(CHARRNN_LOAD8(c3 + i), v3));
                _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_add_ps(a, b)));
            }
        }
#endif
        for (; i < rows; i++)
            out[i] += (CHARRNN_WEIGHT(c0[i]) * x0 + CHARRNN_WEIGHT(c1[i]) * x1)
                    + (CHARRNN_WEIGHT(c2[i]) * x2 + CHARRNN_WEIGHT(c3[i]) * x3);
    }
    for (; j < cols; j++) {
        const charrnn_weight *restrict c0 = w + (size_t)j * (size_t)rows;
        const float x0 = x[j];
        for (i = 0; i < rows; i++) out[i] += CHARRNN_WEIGHT(c0[i]) * x0;
    }
    if (m.scale)
        for (i = 0; i < rows; i++) y[i] += m.scale[i] * sum[i];
}

#if !CHARRNN_RNN_RELU
/* e^x for the gates, written out so that the compiler can vectorize a layer's activations
   (libm's expf and tanhf are calls it cannot): e^x = 2^n e^r with n = round(x / ln 2) and
   r = x - n ln 2 (ln 2 in two parts), e^r by Cephes' expf polynomial; within 2 ulp of expf. */
static float charrnn_exp(float x)
{
    union { uint32_t u; float f; } scale;
    float n, r, p;
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    r = x - n * 0.693359375f + n * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    scale.u = (uint32_t)((int32_t)n + 127) << 23;
    return p * scale.f;
}

/* tanh: (1 - e^-2|x|) / (1 + e^-2|x|) with the sign of x, and near 0, where that
   difference would lose digits, its Taylor series to x^7 (error below 1e-12 there). */
static float charrnn_tanh(float x)
{
    float a = x < 0.0f ? -x : x, e = charrnn_exp(-2.0f * a), t = (1.0f - e) / (1.0f + e);
    float x2 = x * x, series = x + x * x2 * (-0.333333333f + x2 * (0.133333333f - x2 * 0.0539682540f));
    t = x < 0.0f ? -t : t;
    return a < 0.0625f ? series : t;
}
#endif

#if CHARRNN_CELL_RNN
static float charrnn_activation(float x)
{
#if CHARRNN_RNN_RELU
    return x > 0.0f ? x : 0.0f;
#else
    return charrnn_tanh(x);
#endif
}
#else
static float charrnn_sigmoid(float x) { return 1.0f / (1.0f + charrnn_exp(-x)); }
#endif

void charrnn_init(charrnn_state *s, unsigned long long seed)
{
    unsigned long long z = seed + 0x9E3779B97F4A7C15ULL; /* splitmix64 */
    memset(s, 0, sizeof *s);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    s->rng = z ? z : 1; /* xorshift needs a state other than 0 */
}

/* Row `id` of the embedding, or with an input table the first layer's W_ih e + b itself: the
   product and the bias for every character at once, where that takes no more room. */
static void charrnn_embed(float *out, int id)
{
    const charrnn_weight *row = charrnn_embedding + (size_t)id * CHARRNN_EMBED_ROW; /* a row: no transpose */
    int j;
    for (j = 0; j < CHARRNN_EMBED_ROW; j++) {
#if CHARRNN_WEIGHTS_INT8
        out[j] = charrnn_embedding_scale[id] * (float)row[j];
#else
        out[j] = CHARRNN_WEIGHT(row[j]);
#endif
    }
}

const float *charrnn_step(charrnn_state *s, int id)
{
    const int H = CHARRNN_HIDDEN;
    int l, k;
    if (id < 0 || id >= CHARRNN_VOCAB) return NULL;
#if !CHARRNN_INPUT_TABLE
    charrnn_embed(s->input, id);
#endif
    for (l = 0; l < CHARRNN_LAYERS; l++) {
        const charrnn_layer *layer = &charrnn_layers[l];
        const float *x = l == 0 ? s->input : s->h[l - 1];
        float *h = s->h[l];
        float *g = s->gates;
        if (l == 0 && CHARRNN_INPUT_TABLE) {
            charrnn_embed(g, id);
        } else {
            memcpy(g, layer->bias, sizeof s->gates);
            charrnn_matvec_add(g, s->sum, layer->ih, x, CHARRNN_GATES, layer->inputs);
        }
#if CHARRNN_CELL_GRU
        {
            float *gh = s->recurrent;
            memcpy(gh, layer->bias_hh, sizeof s->recurrent);
            charrnn_matvec_add(gh, s->sum, layer->hh, h, CHARRNN_GATES, H);
            for (k = 0; k < H; k++) {
                float r = charrnn_sigmoid(g[k] + gh[k]);
                float z = charrnn_sigmoid(g[H + k] + gh[H + k]);
                float n = charrnn_tanh(g[2 * H + k] + r * gh[2 * H + k]);
                h[k] = (1.0f - z) * n + z * h[k];
            }
        }
#else
        charrnn_matvec_add(g, s->sum, layer->hh, h, CHARRNN_GATES, H);
#if CHARRNN_CELL_LSTM
        for (k = 0; k < H; k++) {
            float i = charrnn_sigmoid(g[k]);
            float f = charrnn_sigmoid(g[H + k]);
            float c = charrnn_tanh(g[2 * H + k]);
            float o = charrnn_sigmoid(g[3 * H + k]);
            s->c[l][k] = f * s->c[l][k] + i * c;
            h[k] = o * charrnn_tanh(s->c[l][k]);
        }
#else
        for (k = 0; k < H; k++) h[k] = charrnn_activation(g[k]);
#endif
#endif
    }
    memcpy(s->logits, charrnn_decoder_bias, sizeof s->logits);
    charrnn_matvec_add(s->logits, s->sum, charrnn_decoder, s->h[CHARRNN_LAYERS - 1], CHARRNN_VOCAB, H);
    return s->logits;
}

static unsigned long long charrnn_next(charrnn_state *s)
{
    unsigned long long x = s->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The k-th largest of v[0..n) (k counts from 1), by quickselect; v is reordered. */
static float charrnn_kth_largest(float *v, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = v[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return v[want];
}

int charrnn_sample(charrnn_state *s, float temperature, int top_k)
{
    const float *z = s->logits;
    float *p = s->work;
    float floor = -HUGE_VALF, top = -HUGE_VALF, total = 0.0f, u;
    int k, best = 0, last = 0;
    for (k = 0; k < CHARRNN_VOCAB; k++)
        if (z[k] > z[best]) best = k; /* the first of equal maxima */
    if (!(temperature >= 1e-4f)) return best;
    if (top_k > 0 && top_k < CHARRNN_VOCAB) {
        memcpy(p, z, sizeof s->work);
        floor = charrnn_kth_largest(p, CHARRNN_VOCAB, top_k); /* ties with it stay */
    }
    top = z[best];
    for (k = 0; k < CHARRNN_VOCAB; k++) {
        if (z[k] < floor) {
            p[k] = 0.0f;
        } else {
            p[k] = temperature > 1e4f ? 1.0f : expf((z[k] - top) / temperature);
            last = k;
        }
        total += p[k];
    }
    u = (float)(charrnn_next(s) >> 40) * (1.0f / 16777216.0f) * total;
    for (k = 0; k < CHARRNN_VOCAB; k++) {
        if (p[k] > 0.0f && u < p[k]) return k;
        u -= p[k];
    }
    return last; /* rounding left u at the very top */
}

static long charrnn_utf8(const unsigned char *t, size_t length, size_t *used)
{
    long point;
    size_t size, k;
    if (length == 0) return -1;
    if (t[0] < 0x80) { *used = 1; return t[0]; }
    if (t[0] >= 0xC2 && t[0] < 0xE0) { size = 2; point = t[0] & 0x1F; }
    else if (t[0] >= 0xE0 && t[0] < 0xF0) { size = 3; point = t[0] & 0x0F; }
    else if (t[0] >= 0xF0 && t[0] < 0xF5) { size = 4; point = t[0] & 0x07; }
    else return -1;
    if (size > length) return -1;
    for (k = 1; k < size; k++) {
        if ((t[k] & 0xC0) != 0x80) return -1;
        point = (point << 6) | (t[k] & 0x3F);
    }
    if ((size == 3 && point < 0x800) || (size == 4 && (point < 0x10000 || point > 0x10FFFF))) return -1;
    *used = size;
    return point;
}

int charrnn_encode(const char *text, size_t length, size_t *used)
{
    const unsigned char *t = (const unsigned char *)text;
    long point;
    int lo = 0, hi = CHARRNN_VOCAB - 1;
    size_t size = 1;
#if CHARRNN_BYTE_LEVEL
    if (length == 0) return -1;
    point = t[0];
#else
    point = charrnn_utf8(t, length, &size);
    if (point < 0) return -1;
#endif
    if (used) *used = size;
    while (lo <= hi) { /* the code points are sorted; each has its id beside it */
        int mid = (lo + hi) / 2;
        if ((long)charrnn_codes[mid] == point) return charrnn_code_ids[mid];
        if ((long)charrnn_codes[mid] < point) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

const char *charrnn_decode(int id, size_t *length)
{
    if (id < 0 || id >= CHARRNN_VOCAB) { *length = 0; return ""; }
    *length = (size_t)(charrnn_token_start[id + 1] - charrnn_token_start[id]);
    return (const char *)charrnn_token_bytes + charrnn_token_start[id];
}

long charrnn_prime(charrnn_state *s, const char *text)
{
    size_t at = 0, length = strlen(text), used = 0;
    long fed = 0;
    while (at < length) {
        int id = charrnn_encode(text + at, length - at, &used);
        if (id < 0) return -1 - (long)at;
        charrnn_step(s, id);
        at += used;
        fed++;
    }
    return fed;
}

size_t charrnn_weight_bytes(void) { return CHARRNN_WEIGHT_BYTES; }

#ifndef CHARRNN_NO_MAIN
#include <time.h>

static double charrnn_seconds(void)
{
#if defined(CLOCK_MONOTONIC)
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC; /* processor time, where no wall clock is known */
#endif
}

/* The next id of stdin's text, or -1 at its end; `at` counts the bytes read. Characters are
   read one at a time, so a text of any length streams through without a buffer. */
static int charrnn_read_id(unsigned long *at)
{
    char bytes[4];
    size_t size = 1, used = 0;
    int lead = getchar(), id;
    if (lead == EOF) return -1;
    bytes[0] = (char)lead;
#if !CHARRNN_BYTE_LEVEL
    {
    size_t k;
    if (lead >= 0xF0) size = 4;
    else if (lead >= 0xE0) size = 3;
    else if (lead >= 0xC0) size = 2;
    for (k = 1; k < size; k++) {
        int next = getchar();
        if (next == EOF) break;
        bytes[k] = (char)next;
    }
    size = k;
    }
#endif
    id = charrnn_encode(bytes, size, &used);
    if (id < 0 || used != size) {
        long point = charrnn_utf8((const unsigned char *)bytes, size, &used);
        if (point < 0)
            fprintf(stderr, "model: stdin is not UTF-8 at byte %lu\n", *at);
        else
            fprintf(stderr, "model: character U+%04lX of stdin (byte %lu) is not in the model's vocabulary\n",
                    (unsigned long)point, *at);
        exit(1);
    }
    *at += size;
    return id;
}

static charrnn_state charrnn_main_state;

static void charrnn_info(void)
{
    printf("model: %s %dx%d, embedding %d, vocabulary %d (%s), %s weights\n", CHARRNN_CELL_NAME,
           CHARRNN_LAYERS, CHARRNN_HIDDEN, CHARRNN_EMBED, CHARRNN_VOCAB,
           CHARRNN_BYTE_LEVEL ? "bytes" : "characters", CHARRNN_WEIGHTS_NAME);
    printf("matrix-vector product: %s\n", CHARRNN_X86 ? "x86 vector instructions, 8 weights at a time" : "portable C");
    printf("parameters: %lu\n", (unsigned long)CHARRNN_PARAMETERS);
    printf("weights: %lu bytes (read-only)\n", (unsigned long)charrnn_weight_bytes());
    printf("state: %lu bytes per stream (charrnn_state)\n", (unsigned long)sizeof(charrnn_state));
    printf("static memory: %lu bytes (weights and one state)\n",
           (unsigned long)(charrnn_weight_bytes() + sizeof(charrnn_state)));
}

static int charrnn_usage(const char *message, const char *arg)
{
    fprintf(stderr, "model: %s%s (model --help lists the options)\n", message, arg ? arg : "");
    return 2;
}

/* The whole number ``text`` for ``option`` into *value, when it is plain decimal digits from
   low to high; otherwise one line naming the range, and 0. Digits are read exactly: through a
   double, a number above 2^53 would be rounded to a neighbour and taken without a word. */
static int charrnn_whole(const char *option, const char *text, unsigned long long low,
                         unsigned long long high, const char *note, unsigned long long *value)
{
    unsigned long long v = 0;
    const char *c = text;
    int ok = *c != '\0';
    for (; ok && *c; c++) {
        unsigned d = (unsigned)(*c - '0');
        if (*c < '0' || *c > '9' || v > high / 10 || (v == high / 10 && d > high % 10)) ok = 0;
        else v = v * 10 + d;
    }
    if (ok && v >= low) {
        *value = v;
        return 1;
    }
    fprintf(stderr, "model: %s must be a whole number from %llu to %llu%s, not %s (model --help lists the options)\n",
            option, low, high, note, text);
    return 0;
}

static int charrnn_sample_text(charrnn_state *s, const char *prime, long length, float temperature, int top_k)
{
    long fed = charrnn_prime(s, prime), t;
    int id;
    if (fed < 0) {
        size_t used = 0, at = (size_t)(-1 - fed);
        long point = charrnn_utf8((const unsigned char *)prime + at, strlen(prime) - at, &used);
        if (point < 0) fprintf(stderr, "model: --prime is not UTF-8 at byte %lu\n", (unsigned long)at);
        else fprintf(stderr, "model: character U+%04lX of --prime is not in the model's vocabulary\n", (unsigned long)point);
        return 1;
    }
    if (fed == 0 && CHARRNN_START_ID >= 0) charrnn_step(s, CHARRNN_START_ID); /* a line start, not written */
    fputs(prime, stdout);
    if (fed == 0 && CHARRNN_START_ID < 0) id = (int)((charrnn_next(s) >> 33) % CHARRNN_VOCAB);
    else id = charrnn_sample(s, temperature, top_k);
    for (t = 0; t < length; t++) {
        size_t bytes;
        const char *text = charrnn_decode(id, &bytes);
        fwrite(text, 1, bytes, stdout);
        if (t + 1 == length) break;
        charrnn_step(s, id);
        id = charrnn_sample(s, temperature, top_k);
    }
    putchar('\n');
    return fflush(stdout) == 0 ? 0 : 1;
}

/* --logits and --score: stdin's text from the zero state, one character at a time */
static int charrnn_read(charrnn_state *s, int logits)
{
    unsigned long at = 0;
    long characters = 0;
    double nats = 0;
    int id, k;
    while ((id = charrnn_read_id(&at)) >= 0) {
        if (characters > 0 && !logits) {
            const float *z = s->logits;
            double top = z[0], total = 0; /* log-softmax, in double */
            for (k = 1; k < CHARRNN_VOCAB; k++) if (z[k] > top) top = z[k];
            for (k = 0; k < CHARRNN_VOCAB; k++) total += exp((double)z[k] - top);
            nats += top + log(total) - (double)z[id];
        }
        charrnn_step(s, id);
        characters++;
        if (logits) {
            for (k = 0; k < CHARRNN_VOCAB; k++) printf(k ? " %.9g" : "%.9g", (double)s->logits[k]);
            putchar('\n');
        }
    }
    if (!logits) printf("characters %ld scored %ld nats %.17g\n", characters, characters > 0 ? characters - 1 : 0, nats);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int charrnn_bench(charrnn_state *s, long steps, float temperature, int top_k)
{
    int id = CHARRNN_START_ID >= 0 ? CHARRNN_START_ID : 0;
    clock_t processor = clock();
    double started = charrnn_seconds();
    long t;
    for (t = 0; t < steps; t++) {
        charrnn_step(s, id);
        id = charrnn_sample(s, temperature, top_k);
    }
    /* wall-clock seconds, and the processor's (less than the wall clock's where other
       programs took turns on the same core) */
    printf("steps %ld seconds %.9f processor_seconds %.9f last %d\n", steps, charrnn_seconds() - started,
           (double)(clock() - processor) / CLOCKS_PER_SEC, id);
    return 0;
}

int main(int argc, char **argv)
{
    charrnn_state *s = &charrnn_main_state;
    const char *prime = "";
    double temperature = 0.8;
    /* The ranges are the types': the sample and bench loops count in long, top-k is an int
       (any k from the vocabulary's size up keeps every character), the seed is 64 bits. */
    unsigned long long length = 1000, top_k = 0, seed = 0, bench = 0;
    int a, mode = 0, seeded = 0; /* mode: 0 sample, 1 info, 2 logits, 3 score, 4 bench */
    for (a = 1; a < argc; a++) {
        const char *o = argv[a];
        char *end = NULL;
        if (!strcmp(o, "--info")) { mode = 1; continue; }
        if (!strcmp(o, "--logits")) { mode = 2; continue; }
        if (!strcmp(o, "--score")) { mode = 3; continue; }
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            puts("usage: model [--prime TEXT] [--length N] [--temperature T] [--top-k K] [--seed S]\n"
                 "       model --info | --bench N | --logits < text | --score < text\n"
                 "The top of this model's source file explains each option and the C API.");
            return 0;
        }
        if (strcmp(o, "--prime") && strcmp(o, "--length") && strcmp(o, "--temperature") && strcmp(o, "--top-k")
            && strcmp(o, "--seed") && strcmp(o, "--bench"))
            return charrnn_usage("unknown option: ", o);
        if (a + 1 >= argc) return charrnn_usage("missing value for ", o);
        a++;
        if (!strcmp(o, "--prime")) prime = argv[a];
        else if (!strcmp(o, "--length")) {
            if (!charrnn_whole(o, argv[a], 1, LONG_MAX, "", &length)) return 2;
        } else if (!strcmp(o, "--top-k")) {
            if (!charrnn_whole(o, argv[a], 0, INT_MAX, " (0 keeps every character)", &top_k)) return 2;
        } else if (!strcmp(o, "--seed")) {
            if (!charrnn_whole(o, argv[a], 0, ULLONG_MAX, "", &seed)) return 2;
            seeded = 1;
        } else if (!strcmp(o, "--bench")) {
            mode = 4;
            if (!charrnn_whole(o, argv[a], 1, LONG_MAX, " (steps)", &bench)) return 2;
        } else {
            temperature = strtod(argv[a], &end);
            if (end == argv[a] || *end != '\0' || !(temperature >= 0))
                return charrnn_usage("--temperature must be a number >= 0 (0 is greedy), not ", argv[a]);
        }
    }
    if (temperature > 1e5) temperature = 1e5; /* uniform from 1e4 on: kept in float's range */
    if (top_k >= CHARRNN_VOCAB) top_k = 0;
    if (!seeded) seed = (unsigned long long)time(NULL);
    charrnn_init(s, seed);
    switch (mode) {
    case 1: charrnn_info(); return 0;
    case 2: return charrnn_read(s, 1);
    case 3: return charrnn_read(s, 0);
    case 4: return charrnn_bench(s, (long)bench, (float)temperature, (int)top_k);
    default: return charrnn_sample_text(s, prime, (long)length, (float)temperature, (int)top_k);
    }
}
#endif /* CHARRNN_NO_MAIN */
#endif /* CHARRNN_HEADER_ONLY */
