/* report_json.c — bloopcl-compare's JSON document (schema "bloopcl-compare/2": /1 plus the
 * dtype combinations): the run's settings, devices[] (each with its identity, its bounds and
 * cases[]), then summary. */
#include "report.h"

#include "tool_json.h"

#include <stdio.h>

static const char *scale_name(scale_mode mode)
{
    return mode == SCALE_HOST ? "host" : mode == SCALE_DEVICE ? "device" : "none";
}

/* {label, g, a, d, scale, inv_scale_g, inv_scale_a} */
static void json_dtype(tool_json *json, const char *key, const options *opt,
                       const dtype_combo *dt)
{
    tool_json_object_begin(json, key);
    tool_json_string(json, "label", dt->label);
    tool_json_string(json, "g", bloopcl_dtype_name(dt->g));
    tool_json_string(json, "a", bloopcl_dtype_name(dt->a));
    tool_json_string(json, "d", bloopcl_dtype_name(dt->d));
    tool_json_string(json, "scale", scale_name(dt->scale));
    tool_json_number(json, "inv_scale_g", combo_inv_scale_g(opt, dt));
    tool_json_number(json, "inv_scale_a", combo_inv_scale_a(opt, dt));
    tool_json_object_end(json);
}

void json_begin(report *rp)
{
    const options *opt = rp->opt;
    tool_json_init(&rp->json, stdout);
    tool_json_document_begin(&rp->json, &COMPARE_TOOL);
    tool_json_string(&rp->json, "mode", opt->quick ? "quick" : "full");
    tool_json_unsigned(&rp->json, "seed", opt->seed);
    tool_json_unsigned(&rp->json, "segments", opt->segments);
    tool_json_unsigned(&rp->json, "shards", opt->shards);
    tool_json_string(&rp->json, "layout",
                     opt->segments > 0 ? segment_layout_name(opt->layout) : "host");
    tool_json_number(&rp->json, "inv_scale", opt->inv_scale);
    tool_json_array_begin(&rp->json, "dtypes");
    for (size_t t = 0; t < opt->num_dtypes; ++t)
        json_dtype(&rp->json, NULL, opt, &opt->dtypes[t]);
    tool_json_array_end(&rp->json);
    tool_json_bool(&rp->json, "clblast_skips_2byte", run_has_narrow(opt));
    tool_json_array_begin(&rp->json, "devices");
}

void json_device(report *rp, const device_facts *facts)
{
    char text[TEXT_SIZE * 2];
    describe_device(facts, text, sizeof text);
    tool_json_object_begin(&rp->json, NULL);
    tool_json_device(&rp->json, "device", &facts->info);
    tool_json_string(&rp->json, "description", text);
    tool_json_bool(&rp->json, "denormals", facts->fp.denormals);
    tool_json_number(&rp->json, "tree_depth", facts->fp.tree_depth);
    tool_json_array_begin(&rp->json, "cases");
}

void json_device_error(report *rp, const char *spec, bloopcl_status status)
{
    tool_json_object_begin(&rp->json, NULL);
    tool_json_string(&rp->json, "spec", spec);
    tool_json_string(&rp->json, "error", bloopcl_status_string(status));
    tool_json_array_begin(&rp->json, "cases");
    tool_json_array_end(&rp->json);
    tool_json_object_end(&rp->json);
}

static void json_case_numbers(tool_json *json, const case_result *res)
{
    tool_json_number(json, "max_abs", res->max_abs);
    tool_json_number(json, "max_rel", res->max_rel);
    tool_json_number(json, "max_ulp", res->max_ulp);
    tool_json_number(json, "r_rel", res->r_rel);
    tool_json_number(json, "d_err_over_tol", res->worst_d);
    tool_json_number(json, "r_err_over_tol", res->worst_r);
}

static void json_case_findings(tool_json *json, const case_result *res)
{
    char verdict[64];
    verdict_text(res, verdict, sizeof verdict);
    tool_json_bool(json, "nan_parity", res->parity_ok);
    tool_json_bool(json, "passed", res->failed == 0);
    tool_json_string(json, "verdict", verdict);
    tool_json_string(json, "expected_divergence", res->diverged ? res->divergence : NULL);
    tool_json_array_begin(json, "failures");
    for (size_t i = 0; i < res->num_details; ++i)
        tool_json_string(json, NULL, res->details[i]);
    tool_json_array_end(json);
}

void json_case(report *rp, const case_def *c, const case_result *res)
{
    tool_json *json = &rp->json;
    tool_json_object_begin(json, NULL);
    tool_json_string(json, "method", bloopcl_method_name(c->config->method));
    tool_json_string(json, "options", c->config->label);
    tool_json_string(json, "backend", backend_name(c->backend));
    json_dtype(json, "dtype", rp->opt, c->dtypes);
    tool_json_unsigned(json, "n", c->n);
    tool_json_string(json, "input", c->input->label);
    tool_json_integer(json, "steps", c->steps);
    json_case_numbers(json, res);
    json_case_findings(json, res);
    tool_json_object_end(json);
}

void json_device_end(report *rp)
{
    tool_json_array_end(&rp->json);    /* cases */
    tool_json_object_end(&rp->json);   /* the device */
}

void json_end(report *rp, double seconds)
{
    const tally *t = &rp->counts;
    tool_json_array_end(&rp->json);    /* devices */
    tool_json_object_begin(&rp->json, "summary");
    tool_json_unsigned(&rp->json, "passed", t->passed);
    tool_json_unsigned(&rp->json, "failed", t->failed);
    tool_json_unsigned(&rp->json, "expected_divergences", t->diverged);
    tool_json_number(&rp->json, "seconds", seconds);
    tool_json_document_end(&rp->json);
    fprintf(stderr, "%zu passed, %zu failed\n", t->passed, t->failed);
}
