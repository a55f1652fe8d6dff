/* report.h — bloopcl-compare's output: per device a header and one line (or JSON object) per
 * case, then the summary; progress on stderr. report.c keeps the counts and the progress and
 * hands the rest to the table (report_table.c) or the JSON document (report_json.c). */
#ifndef BLOOPCL_COMPARE_REPORT_H
#define BLOOPCL_COMPARE_REPORT_H

#include "catalogue.h"
#include "results.h"
#include "tolerance.h"
#include "tool_json.h"

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

/* A device as the checks know it: its identity and its arithmetic. */
typedef struct device_facts {
    bloopcl_device_info info;
    fp_model fp;
} device_facts;

typedef struct tally {
    size_t passed, failed, diverged, done, total;
    bool ftz_notes;   /* a flush-to-zero state difference was accepted somewhere */
} tally;

typedef struct report {
    const options *opt;
    tally counts;
    tool_json json;   /* --json: the document */
} report;

void report_begin(report *rp, const options *opt, size_t total_cases);
void report_device(report *rp, const device_facts *facts);
/* A device that could not be opened (the reason is on stderr already). */
void report_device_error(report *rp, const char *spec, bloopcl_status status);
void report_case_start(report *rp, const case_def *c);
void report_case(report *rp, const case_def *c, const case_result *res);
void report_device_end(report *rp);
void report_end(report *rp, double seconds);

/* "device N: platform / name (TYPE), driver, denormals, tree depth, dot bounds at 16M". */
void describe_device(const device_facts *facts, char *text, size_t size);

/* The two outputs (report_table.c, report_json.c). */
void table_device(const report *rp, const device_facts *facts);
void table_case(const report *rp, const case_def *c, const case_result *res);
void table_end(const report *rp, double seconds);
void json_begin(report *rp);
void json_device(report *rp, const device_facts *facts);
void json_device_error(report *rp, const char *spec, bloopcl_status status);
void json_case(report *rp, const case_def *c, const case_result *res);
void json_device_end(report *rp);
void json_end(report *rp, double seconds);

#endif
