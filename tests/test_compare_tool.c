/* placeholder: being written */
#include <criterion/criterion.h>
Test(placeholder_compare_tool, pending) { cr_assert_fail("not written yet"); }
