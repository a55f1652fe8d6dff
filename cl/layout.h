/* layout.h - indices shared by the host code and the kernels (this file is valid C and valid
 * OpenCL C; it is embedded at the head of the kernel program and included by src/internal.h). */
#ifndef BLOOPCL_LAYOUT_H
#define BLOOPCL_LAYOUT_H

/* The dot products a step may need; partial sums are stored as partials[dot * slots + slot]. */
#define BLOOPCL_DOT_EMA_AUX 0      /* <m, a> */
#define BLOOPCL_DOT_EMA_EMA 1      /* <m, m> */
#define BLOOPCL_DOT_AUX_AUX 2      /* <a, a>  (diagnostics: cosine) */
#define BLOOPCL_DOT_AUXEMA_MAIN 3  /* <q, g>  (PCGrad) */
#define BLOOPCL_DOT_AUXEMA_AUXEMA 4 /* <q, q> (PCGrad) */
#define BLOOPCL_DOT_MAIN_MAIN 5    /* <g, g>  (the gradient norm, for clipping) */
#define BLOOPCL_NUM_DOTS 6

/* The partials buffer holds BLOOPCL_PARTIAL_ROWS rows of `slots` floats. Rows
 * [0, BLOOPCL_NUM_DOTS) are the dots as summed in fp32; the fused backend adds the same sums
 * with every product scaled by 2^+172 (rows BLOOPCL_ROWS_LO + dot: products that would be
 * subnormal stay normal) and by 2^-172 (rows BLOOPCL_ROWS_HI + dot: products and sums beyond
 * FLT_MAX stay finite); see fused_dots.cl. CLBlast writes the first rows only. */
#define BLOOPCL_ROWS_LO BLOOPCL_NUM_DOTS
#define BLOOPCL_ROWS_HI (2 * BLOOPCL_NUM_DOTS)
#define BLOOPCL_PARTIAL_ROWS (3 * BLOOPCL_NUM_DOTS)
/* A bit of the finalize kernel's dots mask (above the dot bits): the partials carry the scaled
 * rows (fused backend). */
#define BLOOPCL_DOTS_MASK_SCALED_ROWS (1 << 8)

/* A step's totals: what the finalize kernel sums the partials into, and what the shards of a
 * split step (bloopcl_step_begin) add up entrywise before bloopcl_step_end: per dot, the plain,
 * lo and hi totals (fp32 sums; lo and hi are the scaled rows, 0 on CLBlast), then how many
 * shards saw a non-finite input and how many rescued a dot (0 or 1 from each). The public
 * BLOOPCL_NUM_TOTALS is this count. */
#define BLOOPCL_TOTAL_MID 0
#define BLOOPCL_TOTAL_LO BLOOPCL_NUM_DOTS
#define BLOOPCL_TOTAL_HI (2 * BLOOPCL_NUM_DOTS)
#define BLOOPCL_TOTAL_NONFINITE (3 * BLOOPCL_NUM_DOTS)
#define BLOOPCL_TOTAL_RESCUED (3 * BLOOPCL_NUM_DOTS + 1)
#define BLOOPCL_TOTALS (3 * BLOOPCL_NUM_DOTS + 2)

/* Scalars written by the finalize kernel (floats) and read by the projection, the host and
 * the caller's kernels: this is the public output buffer (enum bloopcl_output in bloopcl.h
 * has the same indices; src/combiner.c checks that they agree). */
#define BLOOPCL_SCALAR_ACCEPTED 0      /* 1.0f: the step is applied; 0.0f: skipped */
#define BLOOPCL_SCALAR_RATIO 1         /* r used in the direction (after any clip) */
#define BLOOPCL_SCALAR_RATIO_RAW 2     /* <m,a> / (<m,m> + eps) */
#define BLOOPCL_SCALAR_AUX_RATIO 3     /* PCGrad: <q,g> / (<q,q> + eps) */
#define BLOOPCL_SCALAR_SCALE 4         /* s */
#define BLOOPCL_SCALAR_EMA_WEIGHT 5    /* the w this step used (1 for a first-gradient init) */
#define BLOOPCL_SCALAR_DOTS 6          /* BLOOPCL_NUM_DOTS totals from here on */
#define BLOOPCL_SCALAR_REASON (BLOOPCL_SCALAR_DOTS + BLOOPCL_NUM_DOTS) /* why (not) skipped */
#define BLOOPCL_NUM_SCALARS (BLOOPCL_SCALAR_REASON + 1)

/* BLOOPCL_SCALAR_REASON's values (enum bloopcl_skip_reason in bloopcl.h). */
#define BLOOPCL_REASON_NONE 0          /* every input finite, every coefficient of d finite */
#define BLOOPCL_REASON_NONFINITE_INPUT 1
#define BLOOPCL_REASON_OUT_OF_RANGE 2  /* finite inputs, but r (or r_q) is beyond fp32 */

/* Integer flags kept on the device between steps. */
#define BLOOPCL_FLAG_NONFINITE 0       /* set to 1 by any work-item that sees NaN/Inf in g or a */
#define BLOOPCL_FLAG_INITIALIZED 1     /* the EMA holds a value (0 only before a first-gradient init) */
#define BLOOPCL_FLAG_ACCEPTED 2        /* the last step was applied (0: skipped, non-finite input) */
#define BLOOPCL_FLAG_BACKUP_INITIALIZED 3 /* INITIALIZED and ACCEPTED as they were before the */
#define BLOOPCL_FLAG_BACKUP_ACCEPTED 4    /* last finalize, to undo a step that failed to enqueue */
#define BLOOPCL_FLAG_RESCUED 5         /* set by a fused work-group that wrote scaled rows of its own */
#define BLOOPCL_FLAG_INV_SCALE_G 6     /* the step's inverse loss scales, as float bits, when */
#define BLOOPCL_FLAG_INV_SCALE_A 7     /* the caller keeps them on the device (copied there) */
#define BLOOPCL_FLAG_OPT_STEPS 8       /* optimizer steps applied (t of the bias correction) */
#define BLOOPCL_FLAG_BACKUP_OPT_STEPS 9 /* OPT_STEPS before the last finalize (undo) */
#define BLOOPCL_FLAG_LR 10             /* the step's learning rate, as float bits, when the
                                          caller keeps it on the device (copied there) */
/* The scalars pass 2 uses, as float bits: copies of the output buffer's, so that the
 * projection kernel takes one buffer fewer (Metal's 31-buffer limit, bloopcl__slots_for). */
#define BLOOPCL_FLAG_STEP_SCALE 11
#define BLOOPCL_FLAG_STEP_RATIO 12
#define BLOOPCL_FLAG_STEP_AUX_RATIO 13
#define BLOOPCL_FLAG_STEP_EMA_WEIGHT 14
#define BLOOPCL_NUM_FLAGS 15

/* Multi-range launches: each launch of the element-wise and fused kernels takes up to
 * BLOOPCL_SLOTS ranges (OpenCL 1.2 has no pointer tables, so each range's buffers are kernel
 * arguments of their own) and a table in device memory, BLOOPCL_SLOTS rows of
 * BLOOPCL_SLOT_WORDS ulongs per launch, that says where each range starts and which
 * work-groups serve it. Work-groups [first_group, first_group + groups) of a launch serve its
 * range; the count follows the range's size and is a fixed function of the layout, so results
 * are bitwise repeatable. The slot count is chosen per device (8, 16 or 32: the host passes
 * -DBLOOPCL_SLOTS; see choose_slots in src/context.c); the host never assumes it. */
#define BLOOPCL_MAX_SLOTS 32
#define BLOOPCL_SLOT_G_OFFSET 0        /* elements into the range's g buffer */
#define BLOOPCL_SLOT_A_OFFSET 1
#define BLOOPCL_SLOT_D_OFFSET 2
#define BLOOPCL_SLOT_STATE_OFFSET 3    /* elements into the launch's state buffer */
#define BLOOPCL_SLOT_COUNT 4           /* elements in the range */
#define BLOOPCL_SLOT_FIRST_GROUP 5     /* first work-group of the launch serving the range */
#define BLOOPCL_SLOT_GROUPS 6          /* work-groups serving it (>= 1) */
#define BLOOPCL_SLOT_DTYPES 7          /* element types of g, a, d: g | a << 4 | d << 8 */
#define BLOOPCL_SLOT_WORDS 8           /* a power of two */

/* Element types of g, a and d as the kernels see them (same values as enum bloopcl_dtype);
 * the state and every sum are fp32 whatever they are (cl/dtype.cl). */
#define BLOOPCL_KERNEL_F32 0
#define BLOOPCL_KERNEL_F16 1           /* IEEE binary16 */
#define BLOOPCL_KERNEL_BF16 2          /* bfloat16: the upper 16 bits of a float */
#define BLOOPCL_DTYPE_BITS 4           /* bits per tensor in BLOOPCL_SLOT_DTYPES */

/* Method codes as the kernels see them (same values as enum bloopcl_method). */
#define BLOOPCL_KERNEL_BLOOP 0
#define BLOOPCL_KERNEL_DYNAMIC_BARRIER 1
#define BLOOPCL_KERNEL_PCGRAD 2
#define BLOOPCL_KERNEL_MIXED 3

/* Optimizer codes as the kernels see them (same values as enum bloopcl_optimizer_kind). */
#define BLOOPCL_KERNEL_OPT_NONE 0      /* pass 2 writes d */
#define BLOOPCL_KERNEL_OPT_SGD 1       /* pass 2 updates the parameters (d's place) by SGD */
#define BLOOPCL_KERNEL_OPT_ADAMW 2     /* ... by AdamW */

#endif
