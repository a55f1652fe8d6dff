/* text_quote.c — caller and environment text quoted for a message.
 *
 * A message is printed by the caller, often to a terminal: text that came from outside (a
 * device spec, build options) must not reach it raw, or an ESC sequence in BLOOPCL_DEVICE
 * could rewrite the screen and a newline could forge a line of the log. So every byte outside
 * printable ASCII is written as \xNN (\n, \r, \t by name), and '"' and '\' are escaped, which
 * keeps NAME="value" unambiguous. Long text is cut at a byte boundary of the escaped form and
 * says so: "abc"... (2000 bytes). Pure: no allocation, no locale. */
#include "internal.h"

#include <string.h>

/* The escaped form of one byte into `out` (room for 5): its length. */
static size_t escape_byte(unsigned char c, char *out)
{
    static const char hex[] = "0123456789abcdef";
    const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                      : c == '"' ? "\\\"" : c == '\\' ? "\\\\" : NULL;
    if (named != NULL) {
        memcpy(out, named, 3);
        return 2;
    }
    if (c >= 0x20 && c < 0x7f) {
        out[0] = (char)c;
        out[1] = '\0';
        return 1;
    }
    out[0] = '\\';
    out[1] = 'x';
    out[2] = hex[c >> 4];
    out[3] = hex[c & 15];
    out[4] = '\0';
    return 4;
}

static size_t escaped_length(const char *text, size_t length)
{
    size_t total = 0;
    char piece[5];
    for (size_t i = 0; i < length; i++)
        total += escape_byte((unsigned char)text[i], piece);
    return total;
}

/* Room kept at the end of `out` for the closing quote and the elision note when the text
 * does not fit whole. */
#define ELISION_ROOM 32

void bloopcl__quote(char *out, size_t size, const char *text, size_t length)
{
    if (out == NULL || size == 0)
        return;
    out[0] = '\0';
    if (size < ELISION_ROOM + 3)
        return; /* too small to say anything truthful */
    /* Escaped bytes go up to `end`; the closing quote and the NUL (or the note) follow. */
    size_t whole = escaped_length(text, length);
    size_t end = whole + 3 <= size ? whole + 1 : size - ELISION_ROOM;
    size_t used = 0, i = 0;
    out[used++] = '"';
    for (; i < length; i++) {
        char piece[5];
        size_t n = escape_byte((unsigned char)text[i], piece);
        if (used + n > end)
            break;
        memcpy(out + used, piece, n);
        used += n;
    }
    out[used++] = '"';
    out[used] = '\0';
    if (i < length)
        bloopcl__format(out + used, size - used, "... (%zu bytes)", length);
}
