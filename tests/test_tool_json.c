/* test_tool_json.c — the tools' one JSON writer (tools/common/tool_json.c): strings escaped
 * (quotes, backslashes, control characters; bytes that are not UTF-8 as U+FFFD), NaN and Inf
 * written as null, commas and nesting right: the exact text is checked. */
#include "tool_json.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the writer calls make, as one line (the line breaks of arrays removed). */
static char *written(void (*write)(tool_json *json))
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    cr_assert_not_null(out);
    tool_json json;
    tool_json_init(&json, out);
    write(&json);
    fclose(out);
    char *to = text;
    for (const char *from = text; *from != '\0'; ++from)
        if (*from != '\n' && !(*from == ' ' && (to == text || strchr(" [,{", to[-1]) != NULL ||
                                               strchr(" ]}", from[1]) != NULL)))
            *to++ = *from;
    *to = '\0';
    return text;
}

static void strings_and_numbers(tool_json *json)
{
    tool_json_object_begin(json, NULL);
    tool_json_string(json, "quote", "a\"b\\c\n\t\x01");
    tool_json_string(json, "bad utf-8", "x\xff\xc3(y\xc3\xa9");
    tool_json_string(json, "none", NULL);
    tool_json_number(json, "nan", NAN);
    tool_json_number(json, "inf", -INFINITY);
    tool_json_number(json, "tenth", 0.1);
    tool_json_number(json, "third", 1.0 / 3.0);
    tool_json_array_begin(json, "list");
    tool_json_integer(json, NULL, -3);
    tool_json_bool(json, NULL, true);
    tool_json_array_begin(json, NULL);
    tool_json_array_end(json);
    tool_json_array_end(json);
    tool_json_document_end(json);
}

Test(tool_json, escapes_strings_and_guards_numbers)
{
    char *text = written(strings_and_numbers);
    cr_assert_str_eq(text,
                     "{\"quote\":\"a\\\"b\\\\c\\u000a\\u0009\\u0001\","
                     "\"bad utf-8\":\"x\\ufffd\\ufffd(y\xc3\xa9\","
                     "\"none\":null,\"nan\":null,\"inf\":null,\"tenth\":0.1,"
                     "\"third\":0.33333333333333331,\"list\":[-3,true,[]]}");
    free(text);
}
